"""``tuneloop user ...``, ``tuneloop retention run``, ``tuneloop audit list``: thin shells.

    tuneloop user delete USER_ID [--yes] [--purge-files]   right to delete, with lineage taint
    tuneloop user consent USER_ID --training|--no-training
    tuneloop user show USER_ID
    tuneloop retention run --days 90
    tuneloop audit list [--action user.] [--target user:u1] [--limit 50] [--json]

The audit actor is ``cli:<login>`` unless ``--actor`` names someone else.
"""
from __future__ import annotations

import datetime as _dt
import getpass
import json
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from tuneloop.errors import ValidationError
from tuneloop.registry.commands import DbOption, cli_errors, open_db
from tuneloop.registry.versions import jsonable

__all__ = ["register", "default_actor"]

user_app = typer.Typer(help="Users: consent to training, right to delete.", no_args_is_help=True)
retention_app = typer.Typer(help="Delete interactions and feedback past the retention period.", no_args_is_help=True)
audit_app = typer.Typer(help="The audit log of admin actions (read only).", no_args_is_help=True)
ActorOption = typer.Option(None, "--actor", help="Who is acting (default: cli:<login>).")


def default_actor(actor: str | None = None) -> str:
    if actor:
        return actor
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no login name (some containers)
        return "cli"


def _when(ts: float | None) -> str:
    return _dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


@user_app.command("delete")
@cli_errors
def user_delete(ctx: typer.Context, user_id: str = typer.Argument(..., help="The application's user id."),
                yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
                purge_files: bool = typer.Option(False, "--purge-files",
                                                 help="Also remove the files of the tainted dataset snapshots."),
                as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
                actor: str = ActorOption, db: str = DbOption) -> None:
    """Delete USER_ID's interactions, feedback and annotations; taint the datasets and models built on them."""
    from tuneloop.privacy.deletion import delete_user

    if not yes:
        typer.confirm(f"Delete every interaction, feedback and annotation of user {user_id!r}? This cannot be undone",
                      abort=True)
    report = delete_user(open_db(ctx, db), user_id, default_actor(actor), purge_files=purge_files)
    if as_json:
        typer.echo(json.dumps(jsonable(report.to_dict())))
        return
    con = Console()
    what = "already deleted; swept again" if report.already_deleted else "deleted"
    con.print(f"user [bold]{user_id}[/bold] {what}: {report.interactions} interactions, {report.feedback} feedback, "
              f"{report.annotations} annotations, {report.golden_examples} golden examples")
    con.print(f"tainted datasets: {', '.join(report.tainted_datasets) or '-'}")
    con.print(f"tainted model versions: {', '.join(report.tainted_versions) or '-'}")
    if report.champion_tainted:
        con.print(f"[red]warning:[/red] now serving tainted versions ({', '.join(report.champion_tainted)}): "
                  "retrain or roll back")
    if report.dataset_paths and not report.purged_files:
        con.print(f"dataset files still holding the user's data: {', '.join(report.dataset_paths)} "
                  "(--purge-files removes them)")


@user_app.command("consent")
@cli_errors
def user_consent(ctx: typer.Context, user_id: str = typer.Argument(...),
                 training: bool = typer.Option(..., "--training/--no-training",
                                               help="May this user's interactions train models?"),
                 actor: str = ActorOption, db: str = DbOption) -> None:
    """Grant or withdraw USER_ID's consent to training (new datasets leave them out)."""
    from tuneloop.privacy.consent import set_consent

    s = set_consent(open_db(ctx, db), user_id, training=training, actor=default_actor(actor))
    Console().print(f"user [bold]{user_id}[/bold]: training consent {'given' if s.consent_training else 'withdrawn'}")


@user_app.command("show")
@cli_errors
def user_show(ctx: typer.Context, user_id: str = typer.Argument(...),
              as_json: bool = typer.Option(False, "--json"), db: str = DbOption) -> None:
    """Show USER_ID's consent and deletion state."""
    from tuneloop.privacy.consent import get_subject

    s = get_subject(open_db(ctx, db), user_id)
    if as_json:
        typer.echo(json.dumps(s.to_dict()))
        return
    state = f"deleted {_when(s.deleted_at)}" if s.deleted else "active"
    Console().print(f"user [bold]{user_id}[/bold]: {state}, training consent "
                    f"{'given' if s.consent_training else 'withdrawn'}")


def _retention_days(ctx: typer.Context, days: float | None) -> float:
    if days is not None:
        return days
    obj = ctx.find_root().obj
    settings = obj.settings() if hasattr(obj, "settings") else None
    value = getattr(settings, "retention_days", None)
    if value is None and settings is not None:
        value = (settings.loop or {}).get("retention_days")
    if value is None:
        raise ValidationError("retention: give --days or set retention_days in the settings", field="days")
    return float(value)


@retention_app.command("run")
@cli_errors
def retention_run(ctx: typer.Context,
                  days: float = typer.Option(None, "--days", help="Keep this many days (default: retention_days)."),
                  batch_size: int = typer.Option(1000, help="Interactions per transaction."),
                  actor: str = ActorOption, db: str = DbOption) -> None:
    """Delete interactions and feedback older than the retention period, in batches."""
    from rich.progress import MofNCompleteColumn, Progress, SpinnerColumn, TextColumn

    from tuneloop.privacy.retention import enforce_retention

    keep = _retention_days(ctx, days)
    database = open_db(ctx, db)
    with Progress(SpinnerColumn(), TextColumn("deleting expired interactions"), MofNCompleteColumn(),
                  console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("retention", total=None)
        report = enforce_retention(database, keep, actor=default_actor(actor), batch_size=batch_size,
                                   progress=lambda n: progress.advance(task, n))
    Console().print(f"retention {keep:g} days (before {_when(report.cutoff)}): deleted {report.interactions} "
                    f"interactions, {report.feedback} feedback, {report.annotations} annotations, "
                    f"{report.deleted_user_rows} late rows of deleted users")


@audit_app.command("list")
@cli_errors
def audit_list(ctx: typer.Context,
               action: str = typer.Option(None, help="An action, or a prefix ending in '.' (user., retention.)."),
               target: str = typer.Option(None, help="e.g. user:u1, version:v2."),
               actor: str = typer.Option(None, "--actor", help="Only this actor's actions."),
               limit: int = typer.Option(50, min=1, max=1000), as_json: bool = typer.Option(False, "--json"),
               db: str = DbOption) -> None:
    """List audit rows, newest first: who did what, when, to which target, before and after."""
    from tuneloop.privacy.audit import list_audit

    entries = list_audit(open_db(ctx, db), actor=actor, action=action, target=target, limit=limit)
    if as_json:
        typer.echo(json.dumps([jsonable(e.to_dict()) for e in entries]))
        return
    table = Table(title=f"{len(entries)} audit rows")
    for col in ("id", "when", "actor", "action", "target", "before", "after"):
        table.add_column(col, overflow="fold")
    for e in entries:
        table.add_row(str(e.id), _when(e.ts), e.actor, e.action, e.target or "", _short(e.before), _short(e.after))
    Console().print(table)


def _short(value: Any, width: int = 80) -> str:
    if value is None:
        return ""
    text = json.dumps(jsonable(value))
    return text if len(text) <= width else text[: width - 1] + "…"


def register(app: typer.Typer) -> None:
    """Add ``user``, ``retention`` and ``audit`` to the root ``tuneloop`` command."""
    app.add_typer(user_app, name="user")
    app.add_typer(retention_app, name="retention")
    app.add_typer(audit_app, name="audit")
