"""The update-rate policy and the cost rule against the store: read the promotion history,
decide with ``loop/policy.py``'s pure rules, and record every hold with the rule that held it.

Where a hold is recorded:
- a held *start* (no cycle begins): a ``trigger_events`` row (trigger ``policy``, not fired,
  the rule in its details) at every check, and one ``audit_log`` row (``policy_hold``) per
  distinct hold;
- a held *cycle* (waiting at ``gated`` or ``experimenting``): ``loop_runs.details["policy_hold"]``
  (the current hold) and ``details["holds"]`` (each distinct hold once), plus the audit row.

>>> from tuneloop.store import Database
>>> db = Database.open("sqlite:///:memory:")
>>> recent_promotions(db, 0.0)
[]
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from tuneloop.ids import new_id, now
from tuneloop.loop.policy import FINETUNE_LEVERS, HOUR, Hold, Promotion, UpdatePolicy, freeze_hold, promotion_hold, start_hold
from tuneloop.store import Database, schema

log = logging.getLogger("tuneloop.loop")


# --------------------------------------------------------------------------- promotion history
def lever_of_version(db: Database, version_id: str) -> str:
    """Which lever a version changed: its loop cycle's ``details["lever"]``, else the registry's
    reading of it (``lineage["lever"]``, else its columns: model path, adapter, prompt, base)."""
    lr, mv = schema.loop_runs, schema.model_versions
    run = db.fetch_one(sa.select(lr.c.details).where(lr.c.version_id == version_id).order_by(lr.c.started_at.desc()).limit(1))
    if run is not None and (run["details"] or {}).get("lever"):
        return str(run["details"]["lever"])
    v = db.fetch_one(sa.select(mv).where(mv.c.id == version_id))
    if v is None:
        return "adapter"
    if (v["lineage"] or {}).get("lever"):
        return str(v["lineage"]["lever"])
    if v["kind"] == "prompt":
        return "prompt"
    if v["model_path"]:
        return "model"
    if v["adapter_path"] or v["train_run_id"]:
        return "adapter"
    return "prompt" if v["parent_id"] and v["prompt"] else "base"


def recent_promotions(db: Database, since: float) -> list[Promotion]:
    """Promotions after ``since`` from the audit log (loop and manual ones alike).

    The first champion ever (nothing was promoted before it) is a bootstrap, not an update.
    """
    a = schema.audit_log
    rows = db.fetch_all(sa.select(a).where(a.c.action == "promote", a.c.ts > since).order_by(a.c.ts))
    out = []
    for r in rows:
        if not (r["before"] or {}).get("champion"):
            continue
        vid = str(r["target"] or "").removeprefix("version:")
        out.append(Promotion(ts=r["ts"], version_id=vid, lever=lever_of_version(db, vid), actor=r["actor"]))
    return out


def _history(db: Database, policy: UpdatePolicy, t: float) -> list[Promotion]:
    return recent_promotions(db, t - policy.lookback_hours() * HOUR) if not policy.empty else []


# --------------------------------------------------------------------------- checks
def check_start(db: Database, config: Any, lever: str, t: float | None = None) -> Hold | None:
    """May a cycle on ``lever`` start now? (min_interval, then skip_finetune_below)."""
    from tuneloop.loop.cost import skip_finetune_hold

    t = now() if t is None else t
    policy: UpdatePolicy = config.update_policy
    hold = start_hold(policy, lever, _history(db, policy, t), t)
    if hold is None and lever in FINETUNE_LEVERS:
        hold = skip_finetune_hold(db, config.cost_config, t)
    return hold


def check_promotion(db: Database, config: Any, run: Mapping[str, Any], t: float | None = None) -> Hold | None:
    """May this cycle's candidate be promoted now? (freeze, max_promotions, min_interval)."""
    t = now() if t is None else t
    policy: UpdatePolicy = config.update_policy
    if policy.empty:
        return None
    lever = ((run.get("details") or {}).get("lever")) or "adapter"
    return promotion_hold(policy, lever, _history(db, policy, t), t)


# --------------------------------------------------------------------------- recording
def _audit_once(conn: Any, target: str, hold: Hold, extra: Mapping[str, Any]) -> bool:
    """One ``policy_hold`` audit row per distinct (target, rule, until)."""
    from tuneloop.registry.versions import write_audit

    a = schema.audit_log
    last = conn.execute(sa.select(a.c.after).where(a.c.action == "policy_hold", a.c.target == target)
                        .order_by(a.c.id.desc()).limit(1)).scalar()
    if last and last.get("rule") == hold.rule and last.get("until") == hold.until:
        return False
    write_audit(conn, "loop", "policy_hold", target, None, {**hold.to_dict(), **extra})
    return True


def record_start_hold(db: Database, hold: Hold, *, lever: str, triggers: list[str]) -> str:
    """A cycle that did not start: a trigger_events row (every check) and the audit row (once)."""
    event_id, t = new_id(), now()
    details = {**hold.to_dict(), "lever": lever, "held_triggers": triggers}
    with db.begin() as conn:
        conn.execute(schema.trigger_events.insert(), {"id": event_id, "trigger": "policy", "fired": False,
                                                      "reason": f"held by {hold.reason}", "details": details, "ts": t})
        _audit_once(conn, "loop", hold, {"lever": lever, "held_triggers": triggers})
    log.info("cycle held by %s", hold.reason)
    return event_id


def record_override(db: Database, hold: Hold, *, lever: str, reason: str) -> None:
    """A manual trigger started a cycle a start-time rule would have held: audited, every time."""
    from tuneloop.registry.versions import write_audit

    with db.begin() as conn:
        write_audit(conn, "loop", "policy_override", "loop", None,
                    {**hold.to_dict(), "lever": lever, "by": "manual trigger", "trigger_reason": reason})


def record_run_hold(db: Database, run: Mapping[str, Any], hold: Hold, action: str) -> None:
    """A waiting cycle: ``details["policy_hold"]`` now, ``details["holds"]`` once per distinct hold."""
    lr = schema.loop_runs
    entry = {**hold.to_dict(), "action": action, "state": run["state"], "at": now()}
    with db.begin() as conn:
        cur = conn.execute(sa.select(lr.c.details, lr.c.state).where(lr.c.id == run["id"])).first()
        if cur is None or cur.state != run["state"]:
            return  # the cycle moved on meanwhile
        details = dict(cur.details or {})
        prev = details.get("policy_hold") or {}
        details["policy_hold"] = entry
        if (prev.get("rule"), prev.get("until"), prev.get("state")) != (hold.rule, hold.until, run["state"]):
            details["holds"] = list(details.get("holds") or []) + [entry]
        conn.execute(lr.update().where(lr.c.id == run["id"], lr.c.state == run["state"]).values(details=details))
        _audit_once(conn, f"loop_run:{run['id']}", hold, {"action": action, "state": run["state"]})


# --------------------------------------------------------------------------- hooks the stages call
def experiment_hold(db: Database, config: Any, run: Mapping[str, Any]) -> Hold | None:
    """Before traffic reaches a challenger (or, without A/B testing, before its promotion)."""
    e = schema.experiments
    if config.enable_ab_testing:
        started = db.scalar(sa.select(sa.func.count()).select_from(e).where(e.c.treatment_id == run["version_id"]))
        hold = None if started or not config.update_policy.freeze_holds_experiments else freeze_hold(config.update_policy, now())
        action = "start_experiment"
    elif config.enable_auto_promotion:
        hold, action = check_promotion(db, config, run), "promote"
    else:  # nothing is promoted automatically: a human promotes later, outside the loop
        return None
    if hold is not None:
        record_run_hold(db, run, hold, action)
    return hold


def auto_promote_unless_held(db: Database, config: Any, run: Mapping[str, Any], manager: Any) -> Hold | None:
    """Let the A/B manager decide; if the policy holds promotion, it may still roll back or stop.

    A held winner stays in its experiment (the decision says promote, the policy says wait):
    the hold is recorded on the cycle and the promotion happens at the first check it is free.
    """
    import dataclasses

    from tuneloop.experiments.manager import ABTestManager

    hold = check_promotion(db, config, run)
    exp = manager.experiment
    if hold is None or exp is None:
        manager.auto_promote_if_ready()
        return None
    held = ABTestManager(db, dataclasses.replace(manager.config_for(exp), enable_auto_promotion=False),
                         actor=manager.actor, scope=manager.scope)
    held.auto_promote_if_ready()
    e = schema.experiments
    row = db.fetch_one(sa.select(e.c.status, e.c.decision).where(e.c.id == exp.id))
    if row is not None and row["status"] == "running" and (row["decision"] or {}).get("decision") == "promote":
        record_run_hold(db, run, hold, "promote")
        return hold
    return None


def active_hold(run: Mapping[str, Any]) -> dict[str, Any] | None:
    """The hold a cycle is waiting on now, if any (it is stale once the cycle moved on)."""
    hold = (run.get("details") or {}).get("policy_hold")
    if hold and hold.get("state") == run.get("state"):
        return hold
    return None


def policy_status(db: Database, config: Any, t: float | None = None) -> dict[str, Any]:
    """What ``tuneloop loop status`` shows: the freeze now, each lever's next slot, the quota."""
    from tuneloop.loop.policy import LEVERS, freeze_at, max_promotions_hold

    t = now() if t is None else t
    policy: UpdatePolicy = config.update_policy
    history = _history(db, policy, t)
    freeze = freeze_at(policy, t)
    levers = {}
    for lever in LEVERS:  # what would hold a cycle on each lever now (min_interval, skip_finetune_below)
        hold = check_start(db, config, lever, t)
        levers[lever] = hold.to_dict() if hold else None
    quota = max_promotions_hold(policy, history, t)
    period = policy.promotion_period_hours * HOUR
    return {"policy": policy.to_dict(), "freeze": freeze.to_dict() if freeze else None, "levers": levers,
            "promotions_in_period": sum(1 for p in history if p.ts > t - period) if policy.max_promotions else None,
            "quota_hold": quota.to_dict() if quota else None}
