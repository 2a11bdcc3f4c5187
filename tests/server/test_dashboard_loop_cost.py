"""The loop page shows each cycle's cost next to the quality it bought, and the rule holding a cycle."""
from __future__ import annotations

import time

from fastapi.testclient import TestClient

from tuneloop.server.app import create_app
from tuneloop.server.dashboard import mount_dashboard
from tuneloop.store import schema


def _runs(t: float) -> list[dict]:
    cost = {"currency": "EUR", "money": {"total": 2.5}, "compute_seconds": 3960.0, "lever": "adapter",
            "usage": {"judge_tokens": 439, "shadow_tokens": 90, "annotations": 2},
            "quality": {"points": 5.0, "source": "experiment:positive_feedback_rate", "unit": "pp", "shipped": True,
                        "bought": 5.0}, "cost_per_point": 0.5}
    hold = {"rule": "freeze_window", "reason": "freeze window 'release week' until 2030-01-01T00:00:00Z",
            "state": "experimenting", "action": "promote"}
    return [
        {"id": "run-done", "state": "promoted", "decision": "promoted", "version_id": "v1", "started_at": t - 7200,
         "updated_at": t - 3600, "ended_at": t - 3600,
         "details": {"history": [["triggered", t - 7200], ["promoted", t - 3600]], "cost": cost}},
        {"id": "run-held", "state": "experimenting", "decision": None, "version_id": "v2", "started_at": t - 600,
         "updated_at": t, "ended_at": None,
         "details": {"history": [["triggered", t - 600], ["experimenting", t - 300]], "policy_hold": hold,
                     "timings": {"train": 12.0}}},
    ]


def test_loop_page_shows_cost_per_point_and_holds(db, keys):
    with db.begin() as conn:
        conn.execute(schema.loop_runs.insert(), _runs(time.time()))
    app = create_app(db=db)
    mount_dashboard(app)
    c = TestClient(app, base_url="http://testserver")
    assert c.post("/dashboard/login", data={"key": keys["read"], "next": "/dashboard/"},
                  follow_redirects=False).status_code == 303
    html = c.get("/dashboard/loop").text
    assert "Cost vs quality" in html
    assert "2.5000 EUR" in html and "+5.00" in html and "0.5000" in html  # cost, quality bought, cost per point
    assert "439" in html and "90" in html
    assert "held: freeze window" in html and "release week" in html
    # the held cycle has no stored cost yet: priced now from its timings, nothing bought
    assert html.count("<tr><td class=\"nowrap\">") == 2
