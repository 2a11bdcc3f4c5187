import pytest
import sqlalchemy as sa

from tuneloop.capture.records import interaction_row
from tuneloop.errors import StoreError
from tuneloop.server.writer import GroupWriter
from tuneloop.store import schema


def _rows(prefix, n):
    return [interaction_row(query="q", response="a", id=f"{prefix}{i}") for i in range(n)]


def test_concurrent_requests_share_one_commit(db):
    w = GroupWriter(db)
    with w._ready:  # hold the writer back until every request is queued
        futures = [w.submit("interactions", _rows(f"r{k}-", 10)) for k in range(5)]
    assert [f.result(10) for f in futures] == [10] * 5
    assert w.commits == 1
    assert db.scalar(sa.select(sa.func.count()).select_from(schema.interactions)) == 50
    assert w.submit("interactions", _rows("r0-", 10)).result(10) == 0  # idempotent
    w.close()
    with pytest.raises(StoreError):
        w.submit("interactions", _rows("late", 1))


def test_a_failing_request_does_not_fail_the_others(db):
    w = GroupWriter(db)
    bad = [{**_rows("bad", 1)[0], "query": object()}]  # no driver can store this: fails at write time
    with w._ready:
        good1 = w.submit("interactions", _rows("a", 3))
        broken = w.submit("interactions", bad)
        good2 = w.submit("feedback", [{"id": "f1", "interaction_id": "a0", "kind": "thumbs", "value": 1.0,
                                       "source": "user", "ts": 1.0, "text": None, "user_id": None, "meta": None}])
    assert good1.result(10) == 3 and good2.result(10) == 1
    with pytest.raises(StoreError, match="could not store"):
        broken.result(10)
    assert db.scalar(sa.select(sa.func.count()).select_from(schema.interactions)) == 3
    w.close()
