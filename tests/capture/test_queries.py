"""Statistics and streaming over real SQLite / PostgreSQL; percentiles checked against numpy."""
from __future__ import annotations

import random
from datetime import date, datetime, timezone

import numpy as np
import pytest

from tuneloop.capture.queries import interpolate, iter_interactions, percentile_ranks, statistics, to_epoch
from tuneloop.capture.records import feedback_row, interaction_row, write_feedback, write_interactions
from tuneloop.errors import ValidationError


def test_percentile_core_matches_numpy():
    rng = random.Random(3)
    for n in (1, 2, 3, 10, 101, 1000):
        values = sorted(rng.lognormvariate(3, 1) for _ in range(n))
        for q in (0, 50, 95, 99, 100):
            lo, hi, _ = percentile_ranks(n, q)
            got = interpolate({lo: values[lo], hi: values[hi]}, n, q)
            assert got == pytest.approx(float(np.percentile(values, q)))
    assert interpolate({}, 0, 50) is None


def test_empty_database(db):
    s = statistics(db)
    assert s["total"] == 0 and s["feedback_rate"] == 0.0 and s["positive_rate"] is None
    assert s["latency_p99"] is None and s["models"] == {}


def test_statistics_against_hand_computed_values(db):
    rng = random.Random(7)
    latencies = [round(rng.expovariate(1 / 200), 3) for _ in range(997)]
    rows = [interaction_row(query=f"q{i}", response="r", model=("a" if i % 3 else "b"),
                            latency_ms=lat, quality_score=(i % 10) / 10 if i % 4 else None, ts=1000.0 + i)
            for i, lat in enumerate(latencies)]
    rows.append(interaction_row(query="no latency", model="a", ts=5000.0))
    write_interactions(db, rows)
    fb = [feedback_row(rows[0]["id"], value=1), feedback_row(rows[0]["id"], kind="comment", text="x"),
          feedback_row(rows[1]["id"], value=-1), feedback_row(rows[2]["id"], kind="rating", value=5),
          feedback_row(rows[3]["id"], kind="rating", value=3), feedback_row(rows[4]["id"], kind="rating", value=1),
          feedback_row(rows[5]["id"], kind="copy", source="implicit")]
    write_feedback(db, fb)

    s = statistics(db)
    assert s["total"] == 998
    assert s["models"] == {"a": sum(1 for r in rows if r["model"] == "a"), "b": 333}
    assert s["feedback_count"] == 7 and s["feedback_kinds"] == {"thumbs": 2, "comment": 1, "rating": 3, "copy": 1}
    assert s["feedback_rate"] == pytest.approx(5 / 998)  # copy is implicit: not counted
    assert s["positive_rate"] == pytest.approx(2 / 5) and s["negative_rate"] == pytest.approx(2 / 5)
    scores = [r["quality_score"] for r in rows if r["quality_score"] is not None]
    assert s["avg_quality_score"] == pytest.approx(sum(scores) / len(scores))
    assert s["avg_latency_ms"] == pytest.approx(np.mean(latencies))
    for q in (50, 95, 99):
        assert s[f"latency_p{q}"] == pytest.approx(float(np.percentile(latencies, q)))
    assert s["first_ts"] == 1000.0 and s["last_ts"] == 5000.0

    recent = statistics(db, since=1000.0 + 900)
    assert recent["total"] == 98 and recent["feedback_count"] == 0
    assert recent["latency_p50"] == pytest.approx(float(np.percentile(latencies[900:], 50)))


def test_iter_interactions_filters_and_streams(db):
    day = datetime(2024, 5, 1, tzinfo=timezone.utc).timestamp()
    rows = [interaction_row(query=f"q{i}", model="m1" if i % 2 else "m2", ts=day + i * 3600.0,
                            metadata={"i": i}) for i in range(72)]  # three days, hourly
    write_interactions(db, list(reversed(rows)))
    got = list(iter_interactions(db, chunk=7))
    assert [r["id"] for r in got] == [r["id"] for r in rows]  # oldest first, all chunks
    assert got[5]["meta"] == {"i": 5}
    may2 = list(iter_interactions(db, start="2024-05-02", end="2024-05-02"))  # the whole day
    assert len(may2) == 24 and all(day + 86400 <= r["ts"] < day + 2 * 86400 for r in may2)
    assert len(list(iter_interactions(db, start=date(2024, 5, 2), model="m1"))) == 24
    assert len(list(iter_interactions(db, end=datetime(2024, 5, 1, 10)))) == 10
    assert len(list(iter_interactions(db, start=day + 70 * 3600.0))) == 2


def test_bad_time_bounds_name_the_argument(db):
    with pytest.raises(ValidationError, match="start"):
        list(iter_interactions(db, start="yesterday"))
    with pytest.raises(ValidationError, match="since"):
        statistics(db, since=[1])
    assert to_epoch("2024-01-01T00:00:00+00:00") == to_epoch("2024-01-01") == 1704067200.0


def test_pages_split_inside_equal_timestamps(db):
    rows = [interaction_row(query=f"q{i}", ts=500.0) for i in range(25)] + [interaction_row(query="later", ts=501.0)]
    write_interactions(db, rows)
    got = [r["id"] for r in iter_interactions(db, chunk=7)]
    assert got == sorted(r["id"] for r in rows[:25]) + [rows[25]["id"]]


def test_a_long_export_does_not_hold_up_the_writer(db_url, db, tmp_path):
    from tuneloop.capture import UsageLogger

    write_interactions(db, [interaction_row(query=f"q{i}", ts=100.0 + i) for i in range(50)])
    stream = iter_interactions(db, chunk=10)
    first = [next(stream) for _ in range(5)]  # the export is half-way through a page
    with UsageLogger(url=db_url, spool_path=tmp_path / "s.jsonl") as lg:
        lg.log(query="written meanwhile", ts=1.0)
        assert lg.flush(timeout=10)  # the open export holds no lock the writer needs
    rest = list(stream)
    assert len(first) + len(rest) == 50
