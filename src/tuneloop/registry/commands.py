"""``tuneloop registry list|show V|prompt V|promote V|rollback|archive V``: thin shells over :class:`Registry`.

The database comes from the command's ``--db URL`` (a SQLAlchemy URL or a SQLite path),
else from the root command's global ``--db``/``--config``, else from the settings
(``TUNELOOP_DB_URL`` / ``TUNELOOP_DB_PATH`` / config file).
"""
from __future__ import annotations

import datetime as _dt
import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from tuneloop.errors import TuneloopError, ValidationError
from tuneloop.registry.versions import Registry, jsonable
from tuneloop.store import Database

__all__ = ["cli_errors", "open_db", "register"]

DbOption = typer.Option(None, "--db", help="Database URL or SQLite path (default: from settings).")


def open_db(ctx: typer.Context | None, url: str | None = None) -> Database:
    """The database for a command: ``--db``, then the root command's state, then the settings.

    The root state is the CLI's ``CliState`` (its ``open_db()`` honours the global ``--db``
    and ``--config``) or, in tests, a dict whose ``"db"`` is a :class:`Database` or a URL.
    """
    if url:
        return Database.open(url)
    obj = ctx.find_root().obj if ctx is not None else None
    if isinstance(obj, dict):
        db = obj.get("db")
        if isinstance(db, Database):
            return db
        if isinstance(db, str):
            return Database.open(db)
    elif hasattr(obj, "open_db"):
        return obj.open_db()
    from tuneloop.config import load_settings

    return Database.open(load_settings().database_url())


def cli_errors(fn: Callable) -> Callable:
    """Render tuneloop errors as one red line and exit code 1 instead of a traceback."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TuneloopError as exc:
            Console(stderr=True).print(f"[red]error:[/red] {exc.message}")
            raise typer.Exit(1) from exc
    return wrapper


def _when(ts: float | None) -> str:
    return _dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M") if ts else ""


def _short(path: str | None, width: int = 28) -> str:
    """A base model's last path parts, so a table stays readable."""
    text = path or ""
    return text if len(text) <= width else "…" + text[-(width - 1):]


def _registry(ctx: typer.Context, db: str | None, actor: str = "cli") -> Registry:
    return Registry(open_db(ctx, db), actor=actor)


registry_app = typer.Typer(help="Model versions, aliases (champion, challenger, shadow), promotion, rollback.",
                           no_args_is_help=True)


@registry_app.command("list")
@cli_errors
def list_versions(ctx: typer.Context, kind: str = typer.Option(None, help="generator, retriever, reranker, prompt."),
                  status: str = typer.Option(None, help="candidate, active, archived, rejected."),
                  as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
                  db: str = DbOption) -> None:
    """List versions, newest first, with their aliases."""
    reg = _registry(ctx, db)
    versions = reg.list(kind=kind, status=status)
    names: dict[str, list[str]] = {}
    for a in reg.aliases():
        names.setdefault(a.version_id, []).append(a.name)
    if as_json:
        typer.echo(json.dumps([{**jsonable(v.to_dict()), "lever": v.lever, "aliases": names.get(v.id, [])}
                               for v in versions]))
        return
    table = Table(title=f"{len(versions)} model versions")
    for col in ("id", "kind/lever", "backend", "base model", "prompt", "status", "aliases", "parent", "created"):
        table.add_column(col, no_wrap=col in ("id", "aliases", "status"))
    for v in versions:
        status_txt = v.status + (" [red](tainted)[/red]" if v.tainted else "")
        spec = v.prompt_spec
        table.add_row(v.id, f"{v.kind}/{v.lever}", v.backend, _short(v.base_model), spec.label(32) if spec else "",
                      status_txt, ", ".join(names.get(v.id, [])), v.parent_id or "", _when(v.created_at))
    Console().print(table)


@registry_app.command("show")
@cli_errors
def show(ctx: typer.Context, version: str = typer.Argument(..., help="Version id or alias."),
         as_json: bool = typer.Option(False, "--json"), db: str = DbOption) -> None:
    """Show one version: backend, lineage, metrics, aliases and its audit history."""
    reg = _registry(ctx, db)
    v = reg.resolve(version)
    aliases = [a.name for a in reg.aliases() if a.version_id == v.id]
    history = reg.history(f"version:{v.id}", limit=20)
    if as_json:
        typer.echo(json.dumps({**jsonable(v.to_dict()), "lever": v.lever, "aliases": aliases,
                               "history": jsonable(history)}))
        return
    table = Table(title=f"version {v.id}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    table.add_row("lever", v.lever + (f" (over {v.parent_id})" if v.parent_id else ""))
    for key, value in v.to_dict().items():
        if value not in (None, {}, []):
            table.add_row(key, json.dumps(value) if isinstance(value, (dict, list)) else str(value))
    table.add_row("aliases", ", ".join(aliases) or "-")
    for h in history:
        table.add_row(f"{_when(h['ts'])} {h['action']}", f"{h['actor']}: {json.dumps(h['after'])}")
    Console().print(table)


@registry_app.command("prompt")
@cli_errors
def prompt_version(ctx: typer.Context, version: str = typer.Argument(..., help="Id of the new version."),
                   file: Path = typer.Option(None, "--file", "-f", exists=True, dir_okay=False,
                                             help="YAML/JSON prompt: system, template ({input}), few_shot, sampling, name."),
                   system: str = typer.Option(None, help="The system prompt (instead of --file)."),
                   parent: str = typer.Option("champion", help="Version (or alias) whose base, adapter and params it serves with."),
                   db: str = DbOption) -> None:
    """Register a prompt version: PARENT's base and adapter with a new system prompt, template, few-shot examples, sampling."""
    if (file is None) == (system is None):
        raise ValidationError("give the prompt with exactly one of --file or --system", field="prompt")
    if file is not None:
        import yaml

        try:
            prompt = yaml.safe_load(file.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ValidationError(f"{file}: not valid YAML or JSON: {exc}", field="file") from exc
    else:
        prompt = system
    v = _registry(ctx, db).register_prompt(version, prompt, parent=parent, lineage={"source": "cli"})
    Console().print(f"registered [bold]{v.id}[/bold]: a prompt over {v.parent_id}; test it online with "
                    f"`tuneloop deploy --version {v.id} --traffic 10`", highlight=False)


@registry_app.command("promote")
@cli_errors
def promote(ctx: typer.Context, version: str = typer.Argument(..., help="Version id to make champion."),
            reason: str = typer.Option(None, help="Why (kept in the audit log)."), db: str = DbOption) -> None:
    """Make VERSION the champion of its kind; the old champion is archived."""
    reg = _registry(ctx, db)
    before = reg.champion(reg.get(version).kind)
    v = reg.promote(version, reason=reason)
    Console().print(f"champion: [bold]{v.id}[/bold] (was {before.id if before else 'none'})")


@registry_app.command("rollback")
@cli_errors
def rollback(ctx: typer.Context, kind: str = typer.Option("generator", help="Which kind's champion."),
             reason: str = typer.Option(None, help="Why (kept in the audit log)."), db: str = DbOption) -> None:
    """Restore the previous champion in one command."""
    reg = _registry(ctx, db)
    before = reg.champion(kind)
    v = reg.rollback(kind, reason=reason)
    Console().print(f"rolled back: champion [bold]{v.id}[/bold] (was {before.id if before else 'none'})")


@registry_app.command("archive")
@cli_errors
def archive(ctx: typer.Context, version: str = typer.Argument(...), db: str = DbOption) -> None:
    """Retire a version that is not the champion."""
    v = _registry(ctx, db).archive(version)
    Console().print(f"archived {v.id}")


def register(app: typer.Typer) -> None:
    """Add the ``registry`` command group to the root ``tuneloop`` app."""
    app.add_typer(registry_app, name="registry")
