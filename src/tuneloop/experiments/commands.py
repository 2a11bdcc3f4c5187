"""``tuneloop experiment ...`` and ``tuneloop deploy``: thin shells over :class:`ABTestManager`.

    tuneloop experiment start --control v1 --treatment v2 --split 50/50 --duration 48h --mode ab
    tuneloop experiment status [ID]
    tuneloop experiment analyze ID [--apply] [--json]
    tuneloop experiment promote|rollback|stop ID
    tuneloop deploy --version v2 --traffic 100

Settings' ``ab_test_config`` section gives the defaults; flags override them.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import re

import typer
from rich.console import Console
from rich.table import Table

from tuneloop.errors import ValidationError
from tuneloop.experiments import records
from tuneloop.experiments.analysis import Comparison
from tuneloop.experiments.config import ABTestConfig
from tuneloop.experiments.manager import ABTestManager, start_experiment
from tuneloop.registry.commands import DbOption, cli_errors, open_db
from tuneloop.registry.versions import Registry, jsonable

__all__ = ["parse_duration", "parse_split", "register"]

experiment_app = typer.Typer(help="Online experiments: A/B, canary, shadow, bandit; analysis and decisions.",
                             no_args_is_help=True)


def parse_split(text: str) -> float:
    """The treatment's share from ``50/50``, ``90/10``, ``10%`` or ``0.1``.

    >>> parse_split("90/10"), parse_split("50/50"), parse_split("25%"), parse_split("0.05")
    (0.1, 0.5, 0.25, 0.05)
    """
    try:
        if "/" in text:
            control, treatment = (float(x) for x in text.split("/"))
            share = treatment / (control + treatment)
        elif text.endswith("%"):
            share = float(text[:-1]) / 100
        else:
            share = float(text)
            share = share / 100 if share > 1 else share
    except (ValueError, ZeroDivisionError):
        raise ValidationError(f"split {text!r}: use CONTROL/TREATMENT like 90/10, a percent, or a fraction",
                              field="split") from None
    if not 0 < share < 1:
        raise ValidationError(f"split {text!r} must give each arm some traffic", field="split")
    return round(share, 6)


def parse_duration(text: str) -> float:
    """Hours from ``48h``, ``30m``, ``2d``, ``1w`` or a bare number of hours.

    >>> parse_duration("48h"), parse_duration("2d"), parse_duration("30m"), parse_duration("0")
    (48.0, 48.0, 0.5, 0.0)
    """
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([mhdw]?)\s*", text.lower())
    if not m:
        raise ValidationError(f"duration {text!r}: use a number with m, h, d or w (e.g. 48h)", field="duration")
    return float(m.group(1)) * {"m": 1 / 60, "h": 1, "": 1, "d": 24, "w": 168}[m.group(2)]


def _base_config(ctx: typer.Context) -> ABTestConfig:
    """The settings' ``ab_test_config`` section (root state's settings, else loaded)."""
    obj = ctx.find_root().obj
    if isinstance(obj, dict) and obj.get("settings") is not None:
        settings = obj["settings"]
    elif hasattr(obj, "settings") and callable(obj.settings):
        settings = obj.settings()
    else:
        from tuneloop.config import load_settings

        settings = load_settings()
    return ABTestConfig.from_dict(getattr(settings, "ab_test_config", None) or {})


def _when(ts: float | None) -> str:
    return _dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M") if ts else ""


def _pct(x: float | None, scale: str = "relative") -> str:
    if x is None or not math.isfinite(x):
        return "-"
    return f"{x:+.1%}" if scale == "relative" else f"{x:+.4g}"


@experiment_app.command("start")
@cli_errors
def start(ctx: typer.Context, control: str = typer.Option(None, help="Control version (default: the champion)."),
          treatment: str = typer.Option(..., help="Treatment (challenger) version."),
          split: str = typer.Option(None, help="CONTROL/TREATMENT traffic, e.g. 50/50 or 90/10 (A/B mode)."),
          duration: str = typer.Option(None, help="Minimum duration before promotion, e.g. 48h, 2d, 0."),
          mode: str = typer.Option(None, help="ab, canary, shadow or bandit."),
          metric: str = typer.Option(None, help="Primary metric, e.g. positive_feedback_rate or reward."),
          model: str = typer.Option(None, help="Limit the experiment to requests for this model name."),
          name: str = typer.Option(None, help="A name for the experiment."), db: str = DbOption) -> None:
    """Start an experiment between two registered versions."""
    database = open_db(ctx, db)
    cfg = _base_config(ctx).to_dict()
    if duration is not None:
        cfg["min_duration_hours"] = parse_duration(duration)
    if metric:
        cfg["primary_metric"] = metric
    if mode:
        cfg["mode"] = mode
    config = ABTestConfig.from_dict(cfg)
    reg = Registry(database, actor="cli")
    control_id = reg.resolve(control).id if control else getattr(reg.champion(), "id", None)
    if control_id is None:
        raise ValidationError("no champion: pass --control or promote a version first", field="control")
    exp = start_experiment(database, control_id, reg.resolve(treatment).id, mode=config.mode,
                           traffic_weight=parse_split(split) if split else None, config=config, scope=model,
                           name=name, actor="cli")
    Console().print(f"started experiment [bold]{exp.id}[/bold] ({exp.mode}): {exp.control_id} vs "
                    f"{exp.treatment_id}, weights {exp.weights}")


@experiment_app.command("status")
@cli_errors
def status(ctx: typer.Context, experiment_id: str = typer.Argument(None, help="One experiment (default: all recent)."),
           as_json: bool = typer.Option(False, "--json"), db: str = DbOption) -> None:
    """Experiments with their weights, state and latest stored decision."""
    database = open_db(ctx, db)
    exps = [records.get(database, experiment_id)] if experiment_id else records.list_experiments(database, limit=20)
    if as_json:
        typer.echo(json.dumps(jsonable([e.to_dict() for e in exps])))
        return
    table = Table(title="experiments")
    for col in ("id", "mode", "status", "control -> treatment", "weights", "started", "decision"):
        table.add_column(col, no_wrap=col == "id")
    for e in exps:
        table.add_row(e.id, e.mode, e.status, f"{e.control_id} -> {e.treatment_id}",
                      " / ".join(f"{v:.0%}" for v in e.weights.values()), _when(e.started_at),
                      (e.decision or {}).get("decision", "-"))
    console = Console()
    console.print(table)
    for e in exps:
        if e.decision and e.decision.get("reason"):
            console.print(f"{e.id}: {e.decision['reason']}")


@experiment_app.command("analyze")
@cli_errors
def analyze(ctx: typer.Context, experiment_id: str = typer.Argument(..., help="Experiment id."),
            apply: bool = typer.Option(False, "--apply", help="Act on the decision (promote / roll back / advance)."),
            as_json: bool = typer.Option(False, "--json"), db: str = DbOption) -> None:
    """Rates, lift, confidence sequence, p-values, SRM, guardrails and the decision."""
    ab = ABTestManager(open_db(ctx, db), actor="cli")
    exp = records.get(ab.db, experiment_id)
    cmp = ab.compare_models(exp.id)
    if apply and exp.status == "running":
        ab.scope = exp.scope
        ab.auto_promote_if_ready()
        exp = records.get(ab.db, exp.id)
    if as_json:
        typer.echo(json.dumps({"comparison": cmp.to_dict(), "status": exp.status, "decision": exp.decision}))
        return
    render_comparison(cmp, Console())
    if apply:
        Console().print(f"experiment status now: [bold]{exp.status}[/bold]")


def render_comparison(cmp: Comparison, console: Console) -> None:
    """The analysis tables (also used by the dashboard's text export)."""
    arms = list(cmp.metrics)
    table = Table(title=f"experiment {cmp.experiment_id} ({cmp.mode}, rule {cmp.rule})")
    table.add_column("")
    for arm in arms:
        table.add_column(f"{arm} ({cmp.control_id if arm == 'control' else cmp.treatment_id})", justify="right")
    keys = ["interactions", "units", cmp.primary_metric, f"{cmp.primary_metric}_n", "avg_quality_score", "reward",
            "p95_latency_ms", "error_rate"]
    for key in dict.fromkeys(keys):
        vals = [cmp.metrics[a].get(key) for a in arms]
        if any(v is not None for v in vals):
            table.add_row(key, *["-" if v is None else f"{v:.4g}" for v in vals])
    console.print(table)
    stats = Table(show_header=False, title="statistics")
    stats.add_column("", style="bold")
    stats.add_column("")
    stats.add_row("lift (" + cmp.lift_scale + ")", _pct(cmp.improvement, cmp.lift_scale))
    stats.add_row("confidence sequence", f"[{_pct(cmp.ci[0], cmp.lift_scale)}, {_pct(cmp.ci[1], cmp.lift_scale)}]")
    stats.add_row("always-valid p" if cmp.rule == "sequential" else "p-value", f"{cmp.p_value:.4g}")
    if cmp.fixed_horizon:
        stats.add_row("fixed-horizon p (unsafe to peek)", f"{cmp.fixed_horizon.p_value:.4g}")
    if cmp.srm:
        flag = "[red]MISMATCH[/red]" if cmp.srm.mismatch else "ok"
        stats.add_row("SRM", f"{flag} chi2={cmp.srm.chi2:.2f} p={cmp.srm.p_value:.3g} observed {list(cmp.srm.observed)}")
    for g in cmp.guardrails:
        flag = "[red]BREACHED[/red]" if g.breached else "ok"
        stats.add_row(f"guardrail {g.name}", f"{flag} {g.value:.3g} (limit {g.threshold:g}) {g.detail}")
    stats.add_row("duration", f"{cmp.duration_hours:.1f} h")
    color = {"promote": "green", "rollback": "red", "stop": "yellow", "hold": "red"}.get(cmp.decision, "white")
    stats.add_row("decision", f"[{color}]{cmp.decision}[/{color}]: {cmp.reason}")
    console.print(stats)


@experiment_app.command("promote")
@cli_errors
def promote(ctx: typer.Context, experiment_id: str = typer.Argument(...),
            reason: str = typer.Option("manual promotion (cli)"), db: str = DbOption) -> None:
    """Promote the experiment's challenger now."""
    ab = ABTestManager(open_db(ctx, db), actor="cli")
    v = ab.promote(experiment_id, reason=reason)
    Console().print(f"champion: [bold]{v.id}[/bold]")


@experiment_app.command("rollback")
@cli_errors
def rollback(ctx: typer.Context, experiment_id: str = typer.Argument(...),
             reason: str = typer.Option("manual rollback (cli)"), db: str = DbOption) -> None:
    """End a running experiment (champion kept), or undo a promoted one's promotion."""
    ab = ABTestManager(open_db(ctx, db), actor="cli")
    champion = ab.rollback(experiment_id, reason=reason)
    Console().print(f"rolled back; champion: [bold]{champion}[/bold]")


@experiment_app.command("stop")
@cli_errors
def stop(ctx: typer.Context, experiment_id: str = typer.Argument(...),
         reason: str = typer.Option("stopped (cli)"), db: str = DbOption) -> None:
    """End a running experiment without promoting."""
    exp = ABTestManager(open_db(ctx, db), actor="cli").stop(experiment_id, reason=reason)
    Console().print(f"experiment {exp.id}: {exp.status}")


@cli_errors
def deploy(ctx: typer.Context, version: str = typer.Option(..., help="Version id to deploy."),
           traffic: float = typer.Option(100.0, help="Percent of traffic: 100 promotes, 0 withdraws."),
           mode: str = typer.Option("ab", help="ab or canary when traffic < 100."),
           db: str = DbOption) -> None:
    """Send VERSION a share of traffic: 100 makes it champion, less starts an experiment."""
    if not 0 <= traffic <= 100:
        raise ValidationError(f"--traffic must be between 0 and 100, got {traffic}", field="traffic")
    ab = ABTestManager(open_db(ctx, db), _base_config(ctx), actor="cli")
    v = ab.registry.resolve(version)
    exp = ab.experiment
    console = Console()
    if traffic == 100:
        if exp is not None and exp.treatment_id == v.id:
            ab.promote(exp.id, reason="deploy --traffic 100")
        else:
            if exp is not None:
                ab.stop(exp.id, reason=f"replaced by deploy of {v.id}")
            ab.registry.promote(v.id, reason="deploy --traffic 100")
        console.print(f"champion: [bold]{v.id}[/bold] (100% of traffic)")
    elif traffic == 0:
        if exp is None or exp.treatment_id != v.id:
            raise ValidationError(f"{v.id!r} has no traffic to withdraw", field="version")
        ab.stop(exp.id, reason="deploy --traffic 0")
        console.print(f"{v.id} withdrawn; champion keeps 100%")
    elif exp is not None and exp.treatment_id == v.id and exp.mode == "ab":
        w = traffic / 100
        records.save(ab.db, exp, weights={"control": 1 - w, "treatment": w}, actor="cli",
                     audit_action="experiment_reweight")
        console.print(f"{v.id} now gets {traffic:g}% of traffic in experiment {exp.id}")
    else:
        started = ab.deploy_challenger(v.id, traffic_weight=traffic / 100, mode=mode)
        console.print(f"experiment [bold]{started.id}[/bold]: {started.control_id} vs {v.id} at {traffic:g}%")


def register(app: typer.Typer) -> None:
    """Add ``experiment`` and ``deploy`` to the root ``tuneloop`` app."""
    app.add_typer(experiment_app, name="experiment")
    app.command("deploy")(deploy)

