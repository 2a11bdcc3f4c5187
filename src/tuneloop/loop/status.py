"""What ``tuneloop loop status`` adds to the seed's summary: holds, costs, webhook deliveries.

>>> run_row({"id": "r1", "state": "experimenting", "decision": None, "version_id": "v2", "started_at": 1.0,
...          "ended_at": None, "error": None, "details": {"policy_hold": {"rule": "freeze_window",
...          "reason": "freeze window 'xmas'", "state": "experimenting"}}})["hold"]
"freeze_window: freeze window 'xmas'"
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from tuneloop.store import Database, schema


def run_row(r: Mapping[str, Any]) -> dict[str, Any]:
    """One recent cycle: the seed's columns, the lever, the hold it waits on, its cost and quality."""
    from tuneloop.loop.holds import active_hold

    details = r.get("details") or {}
    hold = active_hold(r)
    cost = details.get("cost") or {}
    row = {k: r.get(k) for k in ("id", "state", "decision", "version_id", "started_at", "ended_at", "error")}
    row["lever"] = details.get("lever", "adapter")
    row["hold"] = f"{hold['rule']}: {hold['reason']}" if hold else None
    row["cost"] = (cost.get("money") or {}).get("total")
    row["currency"] = cost.get("currency")
    row["quality_points"] = (cost.get("quality") or {}).get("points")
    row["cost_per_point"] = cost.get("cost_per_point")
    return row


def extra_status(db: Database, config: Any) -> dict[str, Any]:
    """The policy (freeze now, next slot per lever, quota), the cost totals, webhook deliveries."""
    from tuneloop.loop.cost import cost_report
    from tuneloop.loop.holds import policy_status

    out: dict[str, Any] = {"policy": policy_status(db, config)}
    report = cost_report(db, config.cost_config, limit=20)
    out["cost"] = {"currency": report.currency, "total": report.total_money, "points_bought": report.total_points,
                   "cost_per_point": report.cost_per_point, "cycles": len(report.cycles)}
    w = schema.webhook_deliveries
    counts = db.fetch_all(sa.select(w.c.status, sa.func.count().label("n")).group_by(w.c.status))
    out["webhooks"] = {"configured": len(config.webhooks), **{c["status"]: int(c["n"]) for c in counts}}
    return out
