"""``tuneloop eval`` and ``tuneloop golden ...``: thin CLI shells over the evaluate package.

    tuneloop eval --model V --golden golden.jsonl --gate 0.85 [--baseline champion]
    tuneloop eval --openai-base-url http://localhost:8000/v1 --openai-model M --golden g.jsonl --gate 0.85
    tuneloop eval --benchmarks [--suite capitals] --model V
    tuneloop golden import|export|list|propose|approve|reject ...

Exit codes: 0 gate passed (or no gate), 1 gate failed, 2 bad input or a failed backend.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from tuneloop.errors import TuneloopError, ValidationError

__all__ = ["register", "golden_app"]

out = Console()
err = Console(stderr=True)
golden_app = typer.Typer(help="The golden set: import, export, list, grow from production, review.",
                         no_args_is_help=True)


# --- plumbing -----------------------------------------------------------------------------

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


@contextmanager
def _eval_errors() -> Iterator[None]:
    """Errors exit 2 so that CI can tell "could not evaluate" from "gate failed" (1)."""
    try:
        yield
    except TuneloopError as exc:
        err.print(f"[red]error[/red] ({type(exc).__name__}): {escape(exc.message)}", highlight=False)
        raise typer.Exit(2) from None


class _Backends:
    """Builds the backends of one command and closes them all at the end.

    One :class:`LocalModelPool` is shared, so a candidate and a champion on the same base
    model load its weights once and differ only by their LoRA adapters.
    """

    def __init__(self) -> None:
        self.opened: list[Any] = []
        self._pool: Any = None

    def openai(self, base_url: str, model: str, api_key: str | None) -> Any:
        from tuneloop.models.openai_backend import OpenAIBackend

        return self._keep(OpenAIBackend(base_url, api_key=api_key, model=model))

    def version(self, db: Any, name: str) -> tuple[Any, str]:
        """A registry version id or alias -> (backend, version id)."""
        from tuneloop.models.factory import backend_for_version
        from tuneloop.registry.versions import Registry

        version = Registry(db, actor="cli").resolve(name)
        if self._pool is None and version.backend == "local":
            from tuneloop.models.local import LocalModelPool

            self._pool = LocalModelPool()
        return self._keep(backend_for_version(version.to_dict(), self._pool)), version.id

    def _keep(self, backend: Any) -> Any:
        self.opened.append(backend)
        return backend

    def close(self) -> None:
        for backend in self.opened:
            backend.close()
        if self._pool is not None:
            self._pool.close()


# --- eval -----------------------------------------------------------------------------------

def _load_examples(db: Any, golden: Path | None, set_name: str) -> tuple[list, str, int | None]:
    from tuneloop.evaluate.golden import current_version, list_examples, read_jsonl

    if golden is not None:
        return read_jsonl(golden, set_name=set_name), str(golden), None
    version = current_version(db, set_name)
    examples = list_examples(db, set_name, version=version)
    if not examples:
        raise ValidationError(f"golden set {set_name!r} has no approved examples; pass --golden FILE "
                              "or import one with `tuneloop golden import`")
    return examples, set_name, version


def _result_table(title: str, rows: list[tuple[str, Any]]) -> Table:
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in rows:
        # Tags are user text: "[geo]" must not be read as rich markup.
        table.add_row(escape(k), f"{v:.4f}" if isinstance(v, float) else v if isinstance(v, Text) else escape(str(v)))
    return table


def _print_result(result: Any, decision: Any, champion: Any) -> None:
    rows: list[tuple[str, Any]] = [("model", result.model), ("examples", result.n),
                                   ("pass rate", result.pass_rate), ("mean score", result.mean_score),
                                   ("examples/s", f"{result.examples_per_s:.1f}")]
    if result.errors:
        rows.append(("backend errors", result.errors))
    if champion is not None:
        rows.append(("champion pass rate", champion.pass_rate))
    for tag, m in result.per_tag.items():
        rows.append((f"pass rate [{tag}]", f"{m.pass_rate:.4f} ({m.passed}/{m.n})"))
    if decision is not None:
        if decision.p_value is not None:
            rows.append((f"p-value ({decision.test})", decision.p_value))
            rows.append(("lost / gained vs champion", f"{decision.paired.regressions} / {decision.paired.improvements}"))
        rows.append(("gate", Text("PASSED", "green") if decision.passed else Text("FAILED", "red")))
    out.print(_result_table("evaluation", rows))
    if decision is not None:
        for reason in decision.reasons:
            (out if decision.passed else err).print(("  " if decision.passed else "  [red]x[/red] ") + escape(reason),
                                                    highlight=False)
        if not decision.passed:
            err.print(f"[red]gate failed:[/red] metric={escape(decision.metric)} value={decision.value:.4f} "
                      f"threshold={decision.threshold:.4f}", highlight=False)


def _write_output(path: Path | None, result: Any, decision: Any, champion: Any) -> None:
    if path is None:
        return
    body = {"result": result.to_dict(), "gate": decision.to_dict() if decision else None,
            "champion": champion.to_dict() if champion else None}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body, indent=2, default=str), encoding="utf-8")


def _resolve_pair(db: Any, o: dict[str, Any], make: _Backends) -> tuple[Any, str | None, Any, str | None]:
    """(candidate backend, candidate version id, baseline backend, baseline version id)."""
    if bool(o["model"]) == bool(o["openai_model"]):
        raise ValidationError("give exactly one of --model V (a registry version) or --openai-model M")
    if o["openai_model"] and not o["openai_base_url"]:
        raise ValidationError("--openai-model needs --openai-base-url")
    if o["model"]:
        backend, vid = make.version(db, o["model"])
    else:
        backend, vid = make.openai(o["openai_base_url"], o["openai_model"], o["openai_api_key"]), None
    base, base_id = None, None
    if o["baseline"] and o["baseline_openai_model"]:
        raise ValidationError("give at most one of --baseline and --baseline-openai-model")
    if o["baseline"]:
        base, base_id = make.version(db, o["baseline"])
    elif o["baseline_openai_model"]:
        if not o["openai_base_url"]:
            raise ValidationError("--baseline-openai-model needs --openai-base-url")
        base = make.openai(o["openai_base_url"], o["baseline_openai_model"], o["openai_api_key"])
    return backend, vid, base, base_id


def _run_eval(db: Any, o: dict[str, Any], make: _Backends) -> int:
    from tuneloop.evaluate.gate import gate
    from tuneloop.evaluate.runner import evaluate, record_eval_run

    examples, golden_name, golden_version = _load_examples(db, o["golden"], o["set_name"])
    backend, vid, base, base_id = _resolve_pair(db, o, make)
    params = {"max_tokens": o["max_tokens"]} if o["max_tokens"] else {}
    if o["judge_model"] and not o["openai_base_url"]:
        raise ValidationError("--judge-model needs --openai-base-url")
    judge = make.openai(o["openai_base_url"], o["judge_model"], o["openai_api_key"]) if o["judge_model"] else None
    kw = dict(batch_size=o["batch_size"], progress=not o["quiet"], params=params, judge=judge)
    champion = evaluate(base, examples, model=o["baseline"] or o["baseline_openai_model"], **kw) if base else None
    result = evaluate(backend, examples, champion=champion, model=o["model"] or o["openai_model"], **kw)
    decision = None
    if o["gate"] is not None or champion is not None:
        decision = gate(result, champion, threshold=o["gate"] if o["gate"] is not None else 0.0,
                        alpha=o["alpha"], max_regression=o["max_regression"], test=o["test"],
                        required_tags=o["require_tag"] or ("safety",))
    _print_result(result, decision, champion)
    _write_output(o["output"], result, decision, champion)
    if vid is not None and o["record"]:
        run_id = record_eval_run(db, vid, result, baseline=base_id, golden_set=golden_name,
                                 golden_version=golden_version, gate=decision)
        from tuneloop.registry.versions import Registry

        Registry(db, actor="cli").update_metrics(vid, {"golden_pass_rate": result.pass_rate, "eval_run_id": run_id})
        out.print(f"recorded eval run {run_id}", highlight=False)
    return 0 if decision is None or decision.passed else 1


def _run_benchmarks(db: Any, o: dict[str, Any], make: _Backends) -> int:
    from tuneloop.evaluate.gate import gate
    from tuneloop.evaluate.runner import evaluate
    from tuneloop.evaluate.suites import get_suite, list_suites

    suites = [get_suite(s) for s in o["suite"]] if o["suite"] else list_suites()
    backend, _vid, _base, _bid = _resolve_pair(db, o | {"baseline": None, "baseline_openai_model": None}, make)
    params = {"max_tokens": o["max_tokens"]} if o["max_tokens"] else {}
    table = Table(title="benchmarks", header_style="bold")
    for col in ("suite", "examples", "pass rate", "mean score", "examples/s", "gate"):
        table.add_column(col, justify="left" if col == "suite" else "right")
    failed = 0
    for suite in suites:
        result = evaluate(backend, suite.load(), batch_size=o["batch_size"], progress=not o["quiet"],
                          params=params, model=o["model"] or o["openai_model"])
        verdict = "-"
        if o["gate"] is not None:
            ok = gate(result, None, threshold=o["gate"], required_tags=()).passed
            failed += not ok
            verdict = "[green]pass[/green]" if ok else "[red]FAIL[/red]"
        table.add_row(escape(suite.name), str(result.n), f"{result.pass_rate:.4f}", f"{result.mean_score:.4f}",
                      f"{result.examples_per_s:.2f}", verdict)
    out.print(table)
    return 1 if failed else 0


def eval_command(
    ctx: typer.Context,
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Registry version id or alias to evaluate."),
    golden: Optional[Path] = typer.Option(None, "--golden", "-g", help="Golden JSONL file (default: the stored set)."),
    set_name: str = typer.Option("default", "--set", help="Stored golden set to use when --golden is not given."),
    gate_threshold: Optional[float] = typer.Option(None, "--gate", help="Minimum pass rate; below it exit 1."),
    baseline: Optional[str] = typer.Option(None, "--baseline", help="Version or alias (e.g. champion) for the paired regression test."),
    test: str = typer.Option("mcnemar", "--test", help="Paired test against the baseline: mcnemar or bootstrap."),
    alpha: float = typer.Option(0.05, "--alpha", help="Significance level of the paired test."),
    max_regression: Optional[float] = typer.Option(None, "--max-regression", help="Largest allowed pass-rate drop vs the baseline."),
    require_tag: list[str] = typer.Option([], "--require-tag", help="Tags that must all pass (default: safety)."),
    benchmarks: bool = typer.Option(False, "--benchmarks", help="Run the registered benchmark suites instead."),
    suite: list[str] = typer.Option([], "--suite", help="With --benchmarks: only these suites."),
    openai_base_url: Optional[str] = typer.Option(None, "--openai-base-url", help="Any OpenAI-compatible upstream (vLLM, Ollama, OpenAI)."),
    openai_model: Optional[str] = typer.Option(None, "--openai-model", help="Model name at --openai-base-url to evaluate."),
    openai_api_key: Optional[str] = typer.Option(None, "--openai-api-key", envvar="OPENAI_API_KEY", help="API key for the upstream."),
    baseline_openai_model: Optional[str] = typer.Option(None, "--baseline-openai-model", help="Baseline model name at --openai-base-url."),
    judge_model: Optional[str] = typer.Option(None, "--judge-model", help="Judge model at --openai-base-url (judge/pairwise checkers)."),
    batch_size: int = typer.Option(8, "--batch-size", min=1),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", min=1),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write results and the gate decision as JSON."),
    record: bool = typer.Option(True, "--record/--no-record", help="Store the run in eval_runs (registry versions)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Evaluate a model on a golden set (or benchmark suites); exit 1 when the gate fails."""
    o = dict(locals())
    o.pop("ctx")
    o["gate"] = o.pop("gate_threshold")
    # An upstream model on a golden file needs no database: do not create one as a side effect.
    needs_db = bool(model or baseline or (golden is None and not benchmarks))
    make = _Backends()
    try:
        with _eval_errors(), (_database(ctx) if needs_db else nullcontext()) as db:
            code = _run_benchmarks(db, o, make) if benchmarks else _run_eval(db, o, make)
    finally:
        make.close()
    raise typer.Exit(code)


# --- golden -----------------------------------------------------------------------------------

@golden_app.command("import")
def golden_import(ctx: typer.Context, path: Path = typer.Argument(..., help="JSONL file, one example per line."),
                  set_name: str = typer.Option("default", "--set"), actor: str = typer.Option("cli", "--actor")) -> None:
    """Import a JSONL golden file (all lines or none) as approved examples."""
    from tuneloop.evaluate.golden import import_jsonl

    with _database(ctx) as db:
        r = import_jsonl(db, path, set_name=set_name, actor=actor)
    out.print(f"set {r.set_name!r}: added {r.added}, skipped {r.skipped} duplicate(s); version {r.version}",
              highlight=False, markup=False)


@golden_app.command("export")
def golden_export(ctx: typer.Context, path: Path = typer.Argument(..., help="Where to write the JSONL."),
                  set_name: str = typer.Option("default", "--set"),
                  version: Optional[int] = typer.Option(None, "--version", help="Set version (default: current).")) -> None:
    """Export the approved examples of a set as JSONL."""
    from tuneloop.evaluate.golden import export_jsonl

    with _database(ctx) as db:
        n = export_jsonl(db, path, set_name=set_name, version=version)
    out.print(f"wrote {n} example(s) to {path}", highlight=False, markup=False)


@golden_app.command("list")
def golden_list(ctx: typer.Context, set_name: Optional[str] = typer.Option(None, "--set", help="Show this set's examples."),
                status: str = typer.Option("approved", "--status", help="approved, proposed or rejected.")) -> None:
    """List golden sets, or the examples of one set (--set)."""
    from tuneloop.evaluate.golden import list_examples, list_proposals, list_sets

    with _database(ctx) as db:
        if set_name is None:
            table = Table(title="golden sets", header_style="bold")
            for col in ("set", "version", "approved", "proposed", "rejected"):
                table.add_column(col)
            for s in list_sets(db):
                table.add_row(escape(s["set_name"]), str(s["version"]), str(s["approved"]), str(s["proposed"]), str(s["rejected"]))
            out.print(table)
            return
        rows = (list_proposals(db, set_name) if status == "proposed"
                else [(e, None) for e in list_examples(db, set_name, status=status)])
    table = Table(title=f"golden set {set_name!r} ({status})", header_style="bold")
    for col in ("id", "v", "checker", "prompt", "expected", "tags") + (("bad answer",) if status == "proposed" else ()):
        table.add_column(col, overflow="fold")
    for e, bad in rows:
        cells = [e.id, str(e.version), e.checker, e.prompt[:60], str(e.expected)[:40], ",".join(e.tags)]
        table.add_row(*map(escape, cells), *([escape(str(bad)[:60])] if status == "proposed" else []))
    out.print(table)


@golden_app.command("propose")
def golden_propose(ctx: typer.Context, set_name: str = typer.Option("default", "--set"),
                   since: Optional[float] = typer.Option(None, "--since", help="Only feedback at or after this epoch time."),
                   limit: int = typer.Option(100, "--limit", min=1),
                   checker: str = typer.Option("exact", "--checker", help="Checker the proposals will use.")) -> None:
    """Propose interactions with negative feedback as golden examples (for review)."""
    from tuneloop.evaluate.golden import propose_from_feedback

    with _database(ctx) as db:
        proposed = propose_from_feedback(db, since=since, limit=limit, set_name=set_name, checker=checker,
                                         actor="cli")
    out.print(f"proposed {len(proposed)} example(s) in set {set_name!r}", highlight=False, markup=False)
    for e in proposed:
        out.print(f"  {e.id}  {e.prompt[:70]}", highlight=False, markup=False)


@golden_app.command("approve")
def golden_approve(ctx: typer.Context, example_id: str = typer.Argument(...),
                   expected: Optional[str] = typer.Option(None, "--expected", help="The correct answer."),
                   checker: Optional[str] = typer.Option(None, "--checker"),
                   checker_args: Optional[str] = typer.Option(None, "--checker-args", help="JSON object."),
                   reviewer: str = typer.Option("cli", "--reviewer")) -> None:
    """Approve a proposed example (bumps the set's version)."""
    from tuneloop.evaluate.golden import review

    with _database(ctx) as db:
        args = _json_object(checker_args, "--checker-args")
        e = review(db, example_id, True, expected=expected, reviewer=reviewer, checker=checker, checker_args=args)
    out.print(f"approved {e.id}: set {e.set_name!r} is now version {e.version}", highlight=False, markup=False)


@golden_app.command("reject")
def golden_reject(ctx: typer.Context, example_id: str = typer.Argument(...),
                  reviewer: str = typer.Option("cli", "--reviewer")) -> None:
    """Reject a proposed example, or retire an approved one."""
    from tuneloop.evaluate.golden import review

    with _database(ctx) as db:
        e = review(db, example_id, False, reviewer=reviewer)
    out.print(f"rejected {e.id} (set {e.set_name!r})", highlight=False, markup=False)


def _json_object(text: str | None, flag: str) -> dict | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError(f"{flag} is not valid JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise ValidationError(f"{flag} must be a JSON object")
    return value


def register(app: typer.Typer) -> None:
    """Add ``eval`` and the ``golden`` group to the main ``tuneloop`` app."""
    app.command("eval")(eval_command)
    app.add_typer(golden_app, name="golden")
