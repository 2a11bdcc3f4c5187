"""The events webhooks announce, read back from the store (an outbox derived from facts).

Each event comes from a row some package already writes, so whoever caused it -- the loop,
``tuneloop registry rollback``, the dashboard, ``tuneloop monitor drift`` -- it is announced,
and a crash between the fact and the announcement loses nothing: the next sweep finds it.

==================  =================================================================
event               source row
==================  =================================================================
promotion           ``audit_log`` action ``promote``
rollback            ``audit_log`` action ``rollback`` (registry) or ``experiment_rolled_back``
gate_failure        ``eval_runs`` with ``passed = false`` (the loop's gate, ``tuneloop eval --gate``)
drift_alert         ``drift_reports`` with ``drifted = true`` (embedding, behaviour, operations, retrieval)
approval_request    ``loop_runs`` that entered ``awaiting_approval`` (approval mode)
==================  =================================================================

Each event is a dict: ``event``, ``subject`` (the row it comes from: its dedup key),
``occurred_at`` (+ ``_utc``), ``title`` (one line), ``text`` (markdown), ``facts`` (short
key/values for chat layouts) and ``data`` (the full JSON).
"""
from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa

from tuneloop.store import Database, schema


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _event(kind: str, subject: str, ts: float, title: str, text: str, facts: Mapping[str, Any],
           data: Mapping[str, Any]) -> dict[str, Any]:
    return {"event": kind, "subject": subject, "occurred_at": ts, "occurred_at_utc": _utc(ts), "title": title,
            "text": text, "facts": {k: str(v) for k, v in facts.items() if v is not None}, "data": dict(data)}


def _cycle_of(db: Database, version_id: str | None) -> dict[str, Any] | None:
    if not version_id:
        return None
    lr = schema.loop_runs
    run = db.fetch_one(sa.select(lr).where(lr.c.version_id == version_id).order_by(lr.c.started_at.desc()).limit(1))
    if run is None:
        return None
    d = run["details"] or {}
    return {"id": run["id"], "state": run["state"], "lever": d.get("lever", "adapter"), "trigger": d.get("reason"),
            "experiment": d.get("experiment"), "gate": d.get("gate")}


# --------------------------------------------------------------------------- sources
def _registry_events(db: Database, since: float) -> list[dict[str, Any]]:
    a = schema.audit_log
    rows = db.fetch_all(sa.select(a).where(a.c.action.in_(("promote", "rollback", "experiment_rolled_back")),
                                           a.c.ts > since).order_by(a.c.id))
    out = []
    for r in rows:
        before, after = r["before"] or {}, r["after"] or {}
        if r["action"] == "promote":
            vid = str(r["target"] or "").removeprefix("version:")
            cycle = _cycle_of(db, vid)
            lift = ((cycle or {}).get("experiment") or {}).get("improvement")
            title = f"Promoted {vid} to champion" + (f" (was {before['champion']})" if before.get("champion") else "")
            text = f"*{vid}* is the new champion, promoted by `{r['actor']}`.\n{after.get('reason') or ''}".strip()
            facts = {"version": vid, "previous": before.get("champion"), "lever": (cycle or {}).get("lever"),
                     "lift": f"{lift:+.1%}" if isinstance(lift, (int, float)) else None, "by": r["actor"]}
            data = {"version_id": vid, "previous_champion": before.get("champion"), "reason": after.get("reason"),
                    "actor": r["actor"], "cycle": cycle}
            out.append(_event("promotion", f"audit:{r['id']}", r["ts"], title, text, facts, data))
        elif r["action"] == "rollback":
            title = f"Rolled back: champion {before.get('champion')} -> {after.get('champion')}"
            text = f"`{r['actor']}` restored *{after.get('champion')}*; {before.get('champion')} is rejected.\n{after.get('reason') or ''}".strip()
            data = {"kind": "champion", "from": before.get("champion"), "to": after.get("champion"),
                    "reason": after.get("reason"), "actor": r["actor"], "target": r["target"]}
            out.append(_event("rollback", f"audit:{r['id']}", r["ts"], title, text,
                              {"from": before.get("champion"), "to": after.get("champion"), "by": r["actor"]}, data))
        else:
            exp = str(r["target"] or "").removeprefix("experiment:")
            decision = after.get("decision") if isinstance(after.get("decision"), Mapping) else after
            reason = (decision or {}).get("reason") or after.get("reason")
            treatment = (decision or {}).get("treatment_id") or after.get("treatment_id")
            title = f"Experiment {exp} rolled back" + (f": challenger {treatment} removed" if treatment else "")
            data = {"kind": "experiment", "experiment_id": exp, "challenger": treatment, "reason": reason, "actor": r["actor"]}
            out.append(_event("rollback", f"audit:{r['id']}", r["ts"], title, str(reason or ""),
                              {"experiment": exp, "challenger": treatment, "by": r["actor"]}, data))
    return out


def _gate_events(db: Database, since: float) -> list[dict[str, Any]]:
    e = schema.eval_runs
    rows = db.fetch_all(sa.select(e.c.id, e.c.version_id, e.c.baseline_id, e.c.golden_set, e.c.n, e.c.pass_rate,
                                  e.c.gate, e.c.created_at)
                        .where(e.c.passed.is_(False), e.c.created_at > since).order_by(e.c.created_at))
    out = []
    for r in rows:
        g = r["gate"] or {}
        reasons = list(g.get("reasons") or [])
        title = f"Gate failed: {r['version_id']} on golden set {r['golden_set'] or 'default'}"
        text = "\n".join(f"• {x}" for x in reasons) or "the candidate did not pass the offline gate"
        facts = {"version": r["version_id"], "pass rate": f"{r['pass_rate']:.1%}" if r["pass_rate"] is not None else None,
                 "champion": g.get("champion_pass_rate") and f"{g['champion_pass_rate']:.1%}", "examples": r["n"]}
        data = {"eval_run_id": r["id"], "version_id": r["version_id"], "baseline_id": r["baseline_id"],
                "golden_set": r["golden_set"], "n": r["n"], "pass_rate": r["pass_rate"], "gate": g,
                "cycle": _cycle_of(db, r["version_id"])}
        out.append(_event("gate_failure", f"eval_run:{r['id']}", r["created_at"], title, text, facts, data))
    return out


def _drift_summary(kind: str, metrics: Mapping[str, Any]) -> str:
    if kind == "embedding":
        return "methods that drifted: " + (", ".join(metrics.get("drifted_methods") or []) or "-")
    if kind == "behaviour":
        trend = metrics.get("trend") or {}
        return f"satisfaction trend: {trend.get('direction', '?')} (slope {trend.get('slope')})"
    checks = [c.get("name") or c.get("check") for c in (metrics.get("checks") or []) if c.get("drifted")]
    return "checks that drifted: " + (", ".join(str(c) for c in checks) or "-")


def _drift_events(db: Database, since: float) -> list[dict[str, Any]]:
    d = schema.drift_reports
    rows = db.fetch_all(sa.select(d).where(d.c.drifted.is_(True), d.c.created_at > since).order_by(d.c.created_at))
    out = []
    for r in rows:
        metrics = r["metrics"] or {}
        summary = _drift_summary(r["kind"], metrics)
        data = {"report_id": r["id"], "kind": r["kind"], "window": r["window"], "summary": summary,
                "drifted_methods": metrics.get("drifted_methods")}
        out.append(_event("drift_alert", f"drift_report:{r['id']}", r["created_at"], f"Drift alert: {r['kind']} drifted",
                          summary, {"kind": r["kind"], "report": r["id"]}, data))
    return out


def _approval_events(db: Database, since: float) -> list[dict[str, Any]]:
    from tuneloop.loop.approval import evidence

    lr = schema.loop_runs
    out = []
    for run in db.fetch_all(sa.select(lr).where(lr.c.updated_at > since).order_by(lr.c.started_at)):
        entered = next((t for s, t in (run["details"] or {}).get("history") or [] if s == "awaiting_approval"), None)
        if entered is None or entered <= since:
            continue
        shown = evidence(run)
        gate = shown.get("gate") or {}
        text = (f"Cycle `{run['id']}` waits for an approval before any traffic reaches *{run['version_id']}*.\n"
                f"Approve: `tuneloop loop approve {run['id']} --reason ...`  Reject: `tuneloop loop reject {run['id']} --reason ...`")
        facts = {"version": run["version_id"], "gate pass rate": gate.get("pass_rate"),
                 "champion pass rate": gate.get("champion_pass_rate"), "trigger": shown.get("trigger")}
        out.append(_event("approval_request", f"loop_run:{run['id']}:approval", entered,
                          f"Approval needed: cycle {run['id']} ({run['version_id']})", text, facts,
                          {"run_id": run["id"], "evidence": shown}))
    return out


SOURCES = {"promotion": _registry_events, "rollback": _registry_events, "gate_failure": _gate_events,
           "drift_alert": _drift_events, "approval_request": _approval_events}


def collect_events(db: Database, since: float, kinds: set[str] | None = None) -> list[dict[str, Any]]:
    """Every event of ``kinds`` (default: all) that happened after ``since``, oldest first."""
    wanted = set(SOURCES) if kinds is None else set(kinds)
    out: list[dict[str, Any]] = []
    for fn in dict.fromkeys(SOURCES[k] for k in wanted if k in SOURCES):
        out.extend(e for e in fn(db, since) if e["event"] in wanted)
    return sorted(out, key=lambda e: e["occurred_at"])
