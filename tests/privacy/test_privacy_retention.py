"""Retention: expired interactions and feedback go in batches; golden examples stay; audited."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from tuneloop.capture.records import feedback_row, write_feedback
from tuneloop.errors import ValidationError
from tuneloop.ids import new_id, now
from tuneloop.privacy.audit import list_audit
from tuneloop.privacy.deletion import delete_user
from tuneloop.privacy.retention import enforce_retention, retention_cutoff
from tuneloop.store import schema

from .conftest import add_traffic, count

IT, FB, AN, GE = schema.interactions, schema.feedback, schema.annotations, schema.golden_examples
DAY = 86_400


@pytest.fixture
def aged(db):
    t = now()
    old = add_traffic(db, "old", 7, ts=t - 40 * DAY)
    new = add_traffic(db, "new", 3, ts=t - 5 * DAY)
    write_feedback(db, [feedback_row(old[0], kind="thumbs", value=1, ts=t - 1 * DAY),   # recent, on an old answer
                        feedback_row(new[0], kind="thumbs", value=1, ts=t - 1 * DAY),
                        feedback_row(new[1], kind="thumbs", value=-1, ts=t - 35 * DAY)])  # old orphan-ish
    with db.begin() as conn:
        conn.execute(AN.insert(), [{"id": new_id(), "interaction_id": old[1], "kind": "rating", "created_at": t}])
        conn.execute(GE.insert(), [{"id": new_id(), "prompt": "kept", "expected": "x", "status": "approved",
                                    "source_interaction_id": old[2], "created_at": t - 400 * DAY}])
        conn.execute(schema.retrieval_logs.insert(), [
            {"id": new_id(), "interaction_id": old[3], "ts": t - 40 * DAY, "query": "q"},
            {"id": new_id(), "interaction_id": None, "ts": t - 50 * DAY, "query": "standalone search"},
            {"id": new_id(), "interaction_id": new[2], "ts": t - 5 * DAY, "query": "q"}])
    return t, old, new


def test_expired_rows_go_in_batches_and_golden_examples_stay(db, aged):
    t, old, new = aged
    seen = []
    report = enforce_retention(db, 30, batch_size=3, now=t, progress=seen.append)
    assert (report.interactions, report.annotations, report.batches, report.complete) == (7, 1, 3, True)
    assert report.feedback == 2  # the one on an expired answer, and the one older than the cutoff
    assert report.retrieval_logs == 2 and count(db, schema.retrieval_logs) == 1
    assert seen == [3, 3, 1]
    assert count(db, IT) == 3 and set(r["id"] for r in db.fetch_all(sa.select(IT.c.id))) == set(new)
    assert count(db, FB) == 1 and count(db, AN) == 0
    assert count(db, GE) == 1
    [entry] = list_audit(db, action="retention.enforce")
    assert entry.actor == "retention" and entry.after["interactions"] == 7 and entry.after["complete"]
    assert entry.before["retention_days"] == 30


def test_max_batches_bounds_a_run_and_the_next_continues(db, aged):
    t, old, new = aged
    first = enforce_retention(db, 30, batch_size=2, max_batches=2, now=t)
    assert (first.interactions, first.complete) == (4, False)
    second = enforce_retention(db, 30, batch_size=2, now=t)
    assert (second.interactions, second.complete) == (3, True)
    assert [e.after["complete"] for e in list_audit(db, action="retention.enforce")] == [True, False]


def test_retention_sweeps_rows_of_deleted_users(db):
    add_traffic(db, "gone", 2)
    delete_user(db, "gone", actor="t")
    add_traffic(db, "gone", 2, guarded=False)  # arrived after the deletion through a path without the guard
    assert enforce_retention(db, 365).deleted_user_rows == 2
    assert count(db, IT, IT.c.user_id == "gone") == 0


def test_nothing_expired_is_a_quiet_run(db):
    add_traffic(db, "u", 2)
    r = enforce_retention(db, 1)
    assert (r.interactions, r.feedback, r.batches, r.complete) == (0, 0, 0, True)


@pytest.mark.parametrize("days", [0, -1, None, "30", float("nan"), True])
def test_bad_retention_days(db, days):
    with pytest.raises(ValidationError, match="retention_days"):
        enforce_retention(db, days)


def test_cutoff_is_pure():
    assert retention_cutoff(1, now=DAY * 3) == 2 * DAY
    assert retention_cutoff(0.5, now=DAY) == DAY / 2
