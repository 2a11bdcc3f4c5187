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
    _print_policy(summary.get("policy") or {}, summary.get("cost") or {}, summary.get("webhooks") or {})
    _print_levers(summary.get("levers") or {})
    t = Table(title="recent cycles")
    for col in ("id", "state", "lever", "decision", "version", "held by", "cost", "quality", "error"):
        t.add_column(col)
    for r in summary["recent_runs"]:
        t.add_row(r["id"], r["state"], r.get("lever") or "", str(r["decision"] or ""), str(r["version_id"] or ""),
                  str(r.get("hold") or "")[:70], _money(r.get("cost"), r.get("currency")), _points(r.get("quality_points")),
                  str(r["error"] or "")[:60])
    out.print(t)
    t = Table(title="recent trigger checks")
    for col in ("trigger", "fired", "reason"):
        t.add_column(col)
    for r in summary["recent_triggers"]:
        t.add_row(r["trigger"], "yes" if r["fired"] else "no", r["reason"] or "")
    out.print(t)


def _gain(value) -> str:
    return "gain unknown" if value is None else f"{value:+.1%}"


def _print_levers(levers: dict) -> None:
    """The lever order, the next cycle's lever and why, and which lever won how much."""
    if not levers:
        return
    nxt = levers.get("next") or {}
    out.print(f"{'levers':>16}: {' -> '.join(levers.get('order') or [])}; next: {nxt.get('lever')} ({nxt.get('reason')})",
              highlight=False)
    for lever, p in (levers.get("per_lever") or {}).items():
        last = p.get("last") or {}
        best = f", best {_gain(p['best_gain'])}" if p.get("best_gain") is not None else ""
        out.print(f"{'lever ' + lever:>16}: {p['cycles']} cycles, {p['promoted']} promoted{best}; last "
                  f"{last.get('version_id') or '-'} {str(last.get('state', '')).replace('_', ' ')}"
                  + (f" {_gain(last.get('gain'))}" if last.get("state") == "promoted" else ""), highlight=False)
    win = levers.get("last_win")
    if win:
        out.print(f"{'last win':>16}: {win['version_id']} by the {win['lever']} lever, {_gain(win['gain'])}",
                  highlight=False)


def _money(value, currency) -> str:
    return "" if value is None else f"{value:,.4f} {currency or ''}".strip()


def _points(value) -> str:
    return "" if value is None else f"{value:+.2f}"


def _print_policy(policy: dict, cost: dict, hooks: dict) -> None:
    """The update-rate policy now (freeze, next slot per lever, quota), cost totals, webhooks."""
    if policy.get("freeze"):
        f = policy["freeze"]
        out.print(f"{'freeze':>16}: [red]{f['reason']}[/red] until {f['end']} (nothing is promoted)")
    for lever, hold in (policy.get("levers") or {}).items():
        if hold:
            out.print(f"{'held ' + lever:>16}: {hold['rule']}: {hold['reason']}")
    if policy.get("quota_hold"):
        out.print(f"{'promotions':>16}: {policy['quota_hold']['reason']}")
    if cost.get("cycles"):
        per = cost.get("cost_per_point")
        out.print(f"{'cost':>16}: {cost['total']:,.4f} {cost['currency']} over {cost['cycles']} cycles, "
                  f"{cost['points_bought']:+.2f} points bought" + (f", {per:,.4f} per point" if per else ""))
    if hooks.get("configured"):
        counts = ", ".join(f"{k} {v}" for k, v in hooks.items() if k != "configured") or "none yet"
        out.print(f"{'webhooks':>16}: {hooks['configured']} configured; deliveries: {counts}")


@loop_app.command("cost")
def cost(ctx: typer.Context, config: Path | None = ConfigOpt,
         limit: int = typer.Option(20, help="How many recent cycles."),
         as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Cost vs quality per cycle: compute, judge and shadow tokens, annotations, money, points bought, cost per point."""
    from tuneloop.loop.cost import cost_report

    loop = _loop(ctx, config)
    report = cost_report(loop.db, loop.config.cost_config, limit=limit)
    if as_json:
        out.print_json(json.dumps(report.to_dict(), default=str))
        return
    t = Table(title=f"cost vs quality ({report.currency})")
    for col in ("id", "state", "lever", "compute s", "judge tok", "shadow tok", "annotations", "cost", "quality", "bought", "per point"):
        t.add_column(col)
    for r in report.cycles:
        t.add_row(r["id"], r["state"], r["lever"] or "", f"{r['compute_seconds']:.1f}", str(r["judge_tokens"]),
                  str(r["shadow_tokens"]), str(r["annotations"]), f"{r['money']:,.4f}",
                  _points(r["points"]) + (f" ({r['quality_source']})" if r["quality_source"] else ""),
                  _points(r["bought"]), "" if r["cost_per_point"] is None else f"{r['cost_per_point']:,.4f}")
    out.print(t)
    per = "-" if report.cost_per_point is None else f"{report.cost_per_point:,.4f}"
    out.print(f"total {report.total_money:,.4f} {report.currency}; {report.total_points:+.2f} points bought; {per} per point")


@loop_app.command("webhooks")
def webhooks(ctx: typer.Context, config: Path | None = ConfigOpt,
             limit: int = typer.Option(20, help="How many recent deliveries."),
             send: bool = typer.Option(False, "--send", help="Sweep for events now and wait for their delivery.")) -> None:
    """Configured webhooks and recent deliveries (status, attempts, HTTP status); --send delivers pending events now."""
    from tuneloop.notify.notifier import recent_deliveries

    loop = _loop(ctx, config)
    for h in loop.config.webhooks:
        out.print(f"{h.name}: {h.safe_url} ({h.format}, {'signed' if h.secret else 'unsigned'}) events: {', '.join(h.events)}")
    if send and loop.notifier is not None:
        queued = loop.notifier.sweep()
        done = loop.notifier.flush(timeout=120)
        loop.notifier.close(timeout=1)
        out.print(f"sent {len(queued)} deliveries" + ("" if done else " (some still retrying: they stay pending)"))
    t = Table(title="recent deliveries")
    for col in ("created", "hook", "event", "subject", "status", "attempts", "http", "error"):
        t.add_column(col)
    from tuneloop.loop.policy import iso

    for d in recent_deliveries(loop.db, limit):
        t.add_row(iso(d["created_at"]) or "", d["hook"], d["event"], d["subject"], d["status"], str(d["attempts"]),
                  str(d["response_status"] or ""), str(d["error"] or "")[:60])
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
