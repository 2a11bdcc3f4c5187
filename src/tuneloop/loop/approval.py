"""Approval mode (seed 000, regulated domains): no traffic reaches a challenger until an
admin approves its cycle. The decision, the evidence the approver saw and the reason go to
the audit log; the loop never promotes in this mode without an approval.

>>> approve_run(db, run_id, actor="alice", approve=True, reason="golden +12 points")  # doctest: +SKIP
"""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from tuneloop.errors import ConflictError, NotFoundError, ValidationError
from tuneloop.ids import now
from tuneloop.store import Database, schema

AWAITING = "awaiting_approval"


def evidence(run: dict) -> dict[str, Any]:
    """What an approver is shown: data, training and gate results of the cycle."""
    d = run.get("details") or {}
    datasets = {k: {"rows": v.get("rows"), "dropped": v.get("dropped"), "pii": v.get("pii")} for k, v in (d.get("datasets") or {}).items()}
    train = d.get("train") or {}
    shown = {"version_id": run.get("version_id"), "trigger": d.get("reason"), "datasets": datasets,
             "train_metrics": train.get("metrics"), "gate": d.get("gate"), "lever": d.get("lever", "adapter")}
    if d.get("lever") == "prompt":
        shown["prompt"] = train.get("prompt")  # the approver sees the exact prompt that would serve
    return shown


def approve_run(db: Database, run_id: str, *, actor: str, approve: bool, reason: str) -> dict[str, Any]:
    """Record an admin's approval or rejection of a cycle waiting at ``awaiting_approval``."""
    from tuneloop.registry.versions import write_audit

    if not reason or not reason.strip():
        raise ValidationError("a reason is required to approve or reject a cycle", field="reason")
    lr = schema.loop_runs
    with db.begin() as conn:
        run = conn.execute(sa.select(lr).where(lr.c.id == run_id)).mappings().first()
        if run is None:
            raise NotFoundError(f"loop run {run_id!r} does not exist")
        run = dict(run)
        if run["state"] != AWAITING:
            raise ConflictError(f"loop run {run_id} is {run['state']}, not {AWAITING}")
        shown = evidence(run)
        decision = {"decision": "approved" if approve else "rejected", "by": actor, "reason": reason, "at": now(), "evidence": shown}
        details = {**(run["details"] or {}), "approval": decision}
        conn.execute(lr.update().where(lr.c.id == run_id).values(details=details, updated_at=now()))
        write_audit(conn, actor, "loop_approve" if approve else "loop_reject", run_id,
                    {"state": run["state"]}, {"decision": decision["decision"], "reason": reason, "evidence": shown})
    return decision
