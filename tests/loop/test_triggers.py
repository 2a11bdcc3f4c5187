import pytest
import sqlalchemy as sa

from tuneloop.errors import ConfigError
from tuneloop.ids import new_id, now
from tuneloop.loop.triggers import HOUR, TriggerChecker, TriggerConfig
from tuneloop.store import schema


def _interactions(db, n, ts, quality=0.9):
    rows = [{"id": new_id(), "ts": ts, "query": f"q{i}", "response": "r", "model": "m", "quality_score": quality} for i in range(n)]
    with db.begin() as conn:
        conn.execute(schema.interactions.insert(), rows)
    return rows


def _thumbs(db, values, ts):
    with db.begin() as conn:
        conn.execute(schema.feedback.insert(), [{"id": new_id(), "interaction_id": "x", "kind": "thumbs", "value": v, "ts": ts} for v in values])


def _only(results, name):
    return next(r for r in results if r.trigger == name)


def test_sample_count_fires_at_threshold_and_records_every_check(db):
    checker = TriggerChecker(db, TriggerConfig(min_new_samples=10, cooldown_hours=0, min_quality_score=0.7))
    t = now()
    _interactions(db, 9, t - 10)
    _interactions(db, 50, t - 10, quality=0.2)  # low quality does not count
    assert not _only(checker.check(t), "sample_count").fired
    _interactions(db, 1, t - 5)
    r = _only(checker.check(t), "sample_count")
    assert r.fired and r.details["new_samples"] == 10
    events = db.fetch_all(sa.select(schema.trigger_events))
    assert len([e for e in events if e["trigger"] == "sample_count"]) == 2
    assert all(e["reason"] for e in events)


def test_cooldown_holds_every_trigger(db):
    t = now()
    with db.begin() as conn:
        conn.execute(schema.loop_runs.insert(), {"id": "r1", "state": "promoted", "started_at": t - HOUR, "updated_at": t})
    _interactions(db, 100, t - 10)
    results = TriggerChecker(db, TriggerConfig(min_new_samples=10, cooldown_hours=24)).check(t)
    assert [r.trigger for r in results] == ["cooldown"] and not results[0].fired
    # samples before the last cycle do not count once the cooldown is over
    results = TriggerChecker(db, TriggerConfig(min_new_samples=10, cooldown_hours=0.5)).check(t)
    assert _only(results, "sample_count").fired


def test_quality_drop_and_error_rate(db):
    t = now()
    _interactions(db, 40, t - 30 * HOUR, quality=0.9)
    _interactions(db, 40, t - 2 * HOUR, quality=0.6)
    _thumbs(db, [1] * 20 + [-1] * 20, t - HOUR)
    cfg = TriggerConfig(enable_sample_count=False, cooldown_hours=0, quality_drop_threshold=0.1, error_rate_threshold=0.3)
    results = TriggerChecker(db, cfg).check(t)
    drop = _only(results, "quality_drop")
    assert drop.fired and drop.details["relative_drop"] == pytest.approx(1 / 3)
    err = _only(results, "error_rate")
    assert err.fired and err.details["rate"] == pytest.approx(0.5)


def test_scheduled_and_manual(db):
    checker = TriggerChecker(db, TriggerConfig(enable_sample_count=False, enable_scheduled=True, schedule_interval_hours=1, cooldown_hours=0))
    assert _only(checker.check(), "scheduled").fired
    event_id = checker.manual("operator asked")
    row = db.fetch_one(sa.select(schema.trigger_events).where(schema.trigger_events.c.id == event_id))
    assert row["fired"] and row["trigger"] == "manual"


def test_bad_config_names_the_key():
    with pytest.raises(ConfigError, match="min_quality_score"):
        TriggerConfig(min_quality_score=2)
    with pytest.raises(ConfigError, match="bogus"):
        TriggerConfig.from_dict({"bogus": 1})
