"""``tuneloop loop run|status|trigger``: the daemon of seed 002's ``scripts/continuous_loop.py``."""
from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from tuneloop.loop.config import LoopConfig

loop_app = typer.Typer(no_args_is_help=True, help="Run the continuous-learning loop, see its status, trigger a cycle.")
out = Console()
err = Console(stderr=True)


def _loop(ctx: typer.Context, config: Path | None):
    from tuneloop.loop.service import ContinuousLearningLoop

    cfg = LoopConfig.from_file(config) if config else LoopConfig()
    obj = ctx.find_root().obj
    db = obj.open_db() if hasattr(obj, "open_db") and (getattr(obj, "db", None) or not config) else None
    return ContinuousLearningLoop(cfg, db=db)


ConfigOpt = typer.Option(None, "--config", "-c", help="Loop config (seed 002's JSON keys; TOML/YAML too).", dir_okay=False)


@loop_app.command("run")
def run(ctx: typer.Context, config: Path | None = ConfigOpt,
        once: bool = typer.Option(False, help="One iteration, then exit."),
        max_iterations: int | None = typer.Option(None, help="Stop after this many iterations.")) -> None:
    """Check triggers every check_interval_seconds and run cycles to the end; SIGTERM stops it gracefully."""
    logging.basicConfig(level=logging.INFO, format='{"ts":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s","msg":"%(message)s"}')
    loop = _loop(ctx, config)
    signal.signal(signal.SIGTERM, lambda *_: loop.stop())
    signal.signal(signal.SIGINT, lambda *_: loop.stop())

    def show(result: dict) -> None:
        err.print(json.dumps(result, default=str))

    loop.run_loop(max_iterations=1 if once else max_iterations, on_iteration=show)
    err.print("loop stopped")


@loop_app.command("status")
def status(ctx: typer.Context, config: Path | None = ConfigOpt,
           as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Total retrains, last retrain, champion, current stage, last decision, recent runs and triggers."""
    summary = _loop(ctx, config).get_status_summary()
    if as_json:
        out.print_json(json.dumps(summary, default=str))
        return
    for k, v in summary["status"].items():
        out.print(f"{k:>16}: {v}")
    t = Table(title="recent cycles")
    for col in ("id", "state", "decision", "version", "error"):
        t.add_column(col)
    for r in summary["recent_runs"]:
        t.add_row(r["id"], r["state"], str(r["decision"] or ""), str(r["version_id"] or ""), str(r["error"] or "")[:60])
    out.print(t)
    t = Table(title="recent trigger checks")
    for col in ("trigger", "fired", "reason"):
        t.add_column(col)
    for r in summary["recent_triggers"]:
        t.add_row(r["trigger"], "yes" if r["fired"] else "no", r["reason"] or "")
    out.print(t)


@loop_app.command("trigger")
def trigger(ctx: typer.Context, config: Path | None = ConfigOpt,
            reason: str = typer.Option("manual trigger", help="Why (kept in trigger_events).")) -> None:
    """Ask for a cycle now: the running daemon (or the next `loop run`) starts it."""
    event = _loop(ctx, config).trigger(reason)
    out.print(f"manual trigger recorded ({event}); the loop starts a cycle at its next check")


def _decide(ctx: typer.Context, run_id: str, approve: bool, reason: str, actor: str) -> None:
    from tuneloop.loop.approval import approve_run

    obj = ctx.find_root().obj
    db = obj.open_db() if hasattr(obj, "open_db") else LoopConfig().database_url()
    decision = approve_run(db, run_id, actor=actor, approve=approve, reason=reason)
    out.print(f"cycle {run_id}: {decision['decision']} by {actor} ({reason}); the loop acts at its next check")


ReasonOpt = typer.Option(..., "--reason", help="Why (kept in the audit log with the evidence shown).")
ActorOpt = typer.Option(os.environ.get("USER", "admin"), "--actor", help="Who decides (audit log).")


@loop_app.command("approve")
def approve(ctx: typer.Context, run_id: str, reason: str = ReasonOpt, actor: str = ActorOpt) -> None:
    """Approval mode: let a cycle waiting at awaiting_approval send traffic to its challenger."""
    _decide(ctx, run_id, True, reason, actor)


@loop_app.command("reject")
def reject(ctx: typer.Context, run_id: str, reason: str = ReasonOpt, actor: str = ActorOpt) -> None:
    """Approval mode: reject a cycle waiting at awaiting_approval; its challenger never serves."""
    _decide(ctx, run_id, False, reason, actor)


def register(app: typer.Typer) -> None:
    app.add_typer(loop_app, name="loop")
