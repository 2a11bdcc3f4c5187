"""The ``tuneloop`` command: thin wrappers over the library.

    tuneloop serve --config tuneloop.toml        # ingestion API + OpenAI-compatible gateway
    tuneloop keys create --scope ingest          # prints the key once
    tuneloop export --start-date 2024-01-08 --end-date 2024-01-14 --output week.jsonl

Global options ``--config FILE`` (TOML, YAML or JSON; else ``$TUNELOOP_CONFIG``) and
``--db URL_OR_PATH`` choose the settings and the database. Other packages add their
commands through :data:`PLUGIN_MODULES`: each module exposes ``register(app)``.
A :class:`tuneloop.errors.TuneloopError` in any command prints its message and exits 1.
"""
from __future__ import annotations

import importlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from tuneloop.config import Settings, load_settings
from tuneloop.errors import DatasetError, TuneloopError

__all__ = ["app", "PLUGIN_MODULES", "register_plugins"]

#: Modules that add sub-commands with ``register(app: typer.Typer)``; absent ones are skipped.
PLUGIN_MODULES: tuple[str, ...] = (
    "tuneloop.experiments.commands",
    "tuneloop.registry.commands",
    "tuneloop.datasets.commands",
    "tuneloop.evaluate.commands",
    "tuneloop.loop.commands",
    "tuneloop.monitor.commands",
    "tuneloop.signals.commands",
    "tuneloop.privacy.commands",
    "tuneloop.train.commands",
    "tuneloop.retrieval.commands",
    "tuneloop.sim.commands",
)

err = Console(stderr=True)
out = Console()


class _Group(TyperGroup):
    """Turns library errors into a one-line message and exit status 1, for every sub-command."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except TuneloopError as exc:
            err.print(f"[red]error[/red] ({type(exc).__name__}): {escape(exc.message)}", highlight=False)
            raise typer.Exit(1) from None


app = typer.Typer(cls=_Group, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="tuneloop: capture LLM traffic and feedback, build datasets, fine-tune, gate, "
                       "test online, promote.")
keys_app = typer.Typer(cls=_Group, no_args_is_help=True, help="Create, list and revoke API keys.")
db_app = typer.Typer(cls=_Group, no_args_is_help=True, help="Database maintenance.")
app.add_typer(keys_app, name="keys")
app.add_typer(db_app, name="db")


@dataclass
class CliState:
    config: Path | None = None
    db: str | None = None

    def settings(self, config: Path | None = None, **overrides: Any) -> Settings:
        """Settings from the file, the environment, ``--db`` and the command's own flags."""
        if self.db:
            overrides["db_url" if "://" in self.db else "db_path"] = self.db
        settings = load_settings(config or self.config, **overrides)
        if self.db and "://" not in self.db and settings.db_url:
            settings = settings.model_copy(update={"db_url": None})  # --db PATH beats a configured URL
        return settings

    def open_db(self, migrate: bool = True):
        from tuneloop.store import Database

        return Database.open(self.settings().database_url(), migrate=migrate)


def _state(ctx: typer.Context) -> CliState:
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        root.obj = CliState()
    return root.obj


@app.callback()
def main(ctx: typer.Context,
         config: Path | None = typer.Option(None, "--config", "-c", help="Settings file (TOML, YAML or JSON).",
                                            dir_okay=False),
         db: str | None = typer.Option(None, "--db", help="Database URL (postgresql+psycopg://...) or SQLite path.")
         ) -> None:
    """tuneloop: a self-hosted continuous learning system for LLM applications."""
    ctx.obj = CliState(config=config, db=db)


# ---------------------------------------------------------------- serve
@app.command()
def serve(ctx: typer.Context,
          config: Path | None = typer.Option(None, "--config", "-c", help="Settings file (overrides the global one).",
                                             dir_okay=False),
          host: str | None = typer.Option(None, help="Bind address (default from settings: 127.0.0.1)."),
          port: int | None = typer.Option(None, help="Port (default from settings: 8000)."),
          insecure_dev: bool = typer.Option(False, "--insecure-dev",
                                            help="Turn API-key checks OFF. Development only."),
          workers: int = typer.Option(1, min=1, help="Worker processes (each parses and writes; "
                                                     "PostgreSQL or SQLite WAL take concurrent writers).")
          ) -> None:
    """Run the ingestion API and the OpenAI-compatible gateway (uvicorn)."""
    import uvicorn
    from sqlalchemy.engine import make_url

    from tuneloop.server.app import SETTINGS_ENV, create_app
    from tuneloop.store import Database

    settings = _state(ctx).settings(config, host=host, port=port, insecure_dev=insecure_dev or None)
    url = settings.database_url()
    Database.open(url).close()  # migrate once, here, before any worker races to
    auth = "OFF (--insecure-dev)" if settings.insecure_dev else "on"
    shown = make_url(url).render_as_string(hide_password=True)
    err.print(f"tuneloop serving on http://{settings.host}:{settings.port} with {workers} worker(s) "
              f"(database {shown}, API keys {auth})", highlight=False)
    if workers == 1:
        uvicorn.run(create_app(settings=settings), host=settings.host, port=settings.port,
                    log_level=settings.log_level)
        return
    os.environ[SETTINGS_ENV] = settings.model_dump_json()
    # Each worker re-imports this module (multiprocessing spawn) before it can answer
    # uvicorn's health ping: allow a slow start on a busy machine instead of the 5 s default.
    uvicorn.run("tuneloop.server.app:app_from_env", factory=True, workers=workers, host=settings.host,
                port=settings.port, log_level=settings.log_level, timeout_worker_healthcheck=60)


# ---------------------------------------------------------------- stats
def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items()) or "-"
    return str(value)


@app.command()
def stats(ctx: typer.Context,
          since: str | None = typer.Option(None, help="Only interactions at or after this time "
                                                      "(ISO date/time or epoch seconds)."),
          as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """Usage statistics: totals, feedback and positive rates, latency percentiles, models."""
    from tuneloop.capture.queries import statistics

    when: Any = since
    try:
        when = float(since) if since is not None else None  # epoch seconds, else ISO text
    except ValueError:
        pass
    db = _state(ctx).open_db()
    try:
        s = statistics(db, when)
    finally:
        db.close()
    if as_json:
        out.print_json(json.dumps(s))
        return
    table = Table(title="tuneloop statistics", show_header=False)
    for key, value in s.items():
        table.add_row(key, _fmt(value))
    out.print(table)


# ---------------------------------------------------------------- keys
class Scope(str, Enum):
    ingest = "ingest"
    read = "read"
    admin = "admin"


@keys_app.command("create")
def keys_create(ctx: typer.Context,
                scope: Scope = typer.Option(..., help="ingest (write + gateway) | read | admin (everything)."),
                name: str | None = typer.Option(None, help="A label to recognise the key by."),
                quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the key.")) -> None:
    """Create an API key and print it once (only its hash is stored)."""
    from tuneloop.server.keys import create_key

    db = _state(ctx).open_db()
    try:
        created = create_key(db, scope.value, name=name)
    finally:
        db.close()
    if not quiet:
        err.print(f"Created {scope.value} key {created.key.id}" + (f" ({name})" if name else ""))
    print(created.secret)
    if not quiet:
        err.print("[yellow]Store it now: it is shown only once.[/yellow]")


@keys_app.command("list")
def keys_list(ctx: typer.Context,
              active: bool = typer.Option(False, "--active", help="Hide revoked keys.")) -> None:
    """List API keys (id, name, prefix, scope, dates); never the keys themselves."""
    from datetime import datetime, timezone

    from tuneloop.server.keys import list_keys

    db = _state(ctx).open_db()
    try:
        keys = list_keys(db, include_revoked=not active)
    finally:
        db.close()

    def when(ts: float | None) -> str:
        return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M") if ts else "-"

    table = Table("id", "name", "prefix", "scope", "created", "last used", "revoked")
    for k in keys:
        table.add_row(k.id, k.name or "-", k.prefix + "…", k.scope, when(k.created_at), when(k.last_used_at),
                      when(k.revoked_at))
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(ctx: typer.Context, key_id: str = typer.Argument(..., metavar="ID",
                                                                 help="Key id (or a unique prefix).")) -> None:
    """Revoke an API key: requests with it get 401."""
    from tuneloop.server.keys import revoke_key

    db = _state(ctx).open_db()
    try:
        key = revoke_key(db, key_id)
    finally:
        db.close()
    out.print(f"Revoked {key.scope} key {key.id} ({key.prefix}…)")


# ---------------------------------------------------------------- db
@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context,
               revision: str = typer.Option("head", help="Target schema revision.")) -> None:
    """Apply database migrations (also done automatically on open)."""
    from tuneloop.store.migrate import current

    db = _state(ctx).open_db(migrate=False)
    try:
        before = current(db.engine)
        db.upgrade(revision)
        after = current(db.engine)
    finally:
        db.close()
    out.print(f"database {db!r}: schema {before or 'empty'} -> {after}")


# ---------------------------------------------------------------- export
_JSON_COLUMNS = ("messages", "meta")


def _arrow_schema():
    import pyarrow as pa
    import sqlalchemy as sa

    from tuneloop.store import schema

    def arrow_type(col: sa.Column):
        if col.name in _JSON_COLUMNS:
            return pa.string()  # JSON text: nested chat lists do not fit one Arrow type
        if isinstance(col.type, sa.Boolean):
            return pa.bool_()
        if isinstance(col.type, sa.Integer):
            return pa.int64()
        if isinstance(col.type, sa.Float):
            return pa.float64()
        return pa.string()

    return pa.schema([(c.name, arrow_type(c)) for c in schema.interactions.columns])


def _chunks(rows: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]], advance) -> int:
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, default=str))
            f.write("\n")
            n += 1
            if n % 1000 == 0:
                advance(1000)
    advance(n % 1000)
    return n


def _write_parquet(path: Path, rows: Iterable[dict[str, Any]], advance, chunk: int = 10_000) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _arrow_schema()
    n = 0
    with pq.ParquetWriter(path, schema) as writer:
        for batch in _chunks(rows, chunk):
            columns = {name: [r.get(name) for r in batch] for name in schema.names}
            for name in _JSON_COLUMNS:
                columns[name] = [None if v is None else json.dumps(v, ensure_ascii=False, default=str)
                                 for v in columns[name]]
            writer.write_table(pa.table(columns, schema=schema))
            n += len(batch)
            advance(len(batch))
    return n


def _count(db, start: str | None, end: str | None, model: str | None) -> int:
    import sqlalchemy as sa

    from tuneloop.capture.queries import to_epoch
    from tuneloop.store import schema

    t = schema.interactions
    stmt = sa.select(sa.func.count()).select_from(t)
    lo, hi = to_epoch(start, field="start"), to_epoch(end, field="end", end_of_day=True)
    if lo is not None:
        stmt = stmt.where(t.c.ts >= lo)
    if hi is not None:
        stmt = stmt.where(t.c.ts < hi)
    if model is not None:
        stmt = stmt.where(t.c.model == model)
    return int(db.scalar(stmt) or 0)


@app.command()
def export(ctx: typer.Context,
           output: Path = typer.Option(..., "--output", "-o", help="FILE.jsonl or FILE.parquet.", dir_okay=False),
           start_date: str | None = typer.Option(None, help="First day (ISO date or time), inclusive."),
           end_date: str | None = typer.Option(None, help="Last day (ISO date), inclusive of that whole day."),
           model: str | None = typer.Option(None, help="Only this model's interactions.")) -> None:
    """Export interactions to JSON Lines or Parquet, streaming (never all rows in memory)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from tuneloop.capture.queries import iter_interactions

    suffix = output.suffix.lower()
    if suffix not in (".jsonl", ".parquet"):
        raise typer.BadParameter("must end in .jsonl or .parquet", param_hint="--output")
    db = _state(ctx).open_db()
    output.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the target, then rename: a crash or an error never leaves half a file.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        total = _count(db, start_date, end_date, model)
        with Progress(TextColumn("exporting"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=err, transient=True) as progress:
            task = progress.add_task("export", total=total)
            rows = iter_interactions(db, start_date, end_date, model=model)
            advance = lambda k: progress.advance(task, k)  # noqa: E731
            n = _write_jsonl(tmp, rows, advance) if suffix == ".jsonl" else _write_parquet(tmp, rows, advance)
        os.replace(tmp, output)
    except OSError as exc:  # a full disk, a file-size limit: one line naming the file, not a traceback
        tmp.unlink(missing_ok=True)
        raise DatasetError(f"cannot write {output}: {exc.strerror or exc}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        db.close()
    out.print(f"{n:,} interactions exported to {output}")


# ---------------------------------------------------------------- plugins
def register_plugins(target: typer.Typer, modules: Iterable[str] = PLUGIN_MODULES) -> list[str]:
    """Call ``register(target)`` of each module that exists; return the names registered.

    A module that does not exist is skipped; any other import error propagates, so a
    broken plugin is never silently hidden.
    """
    registered = []
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
                continue  # the module itself (or its package) does not exist
            raise
        module.register(target)
        registered.append(name)
    return registered


register_plugins(app)

if __name__ == "__main__":  # pragma: no cover
    app()
