"""Reports read windows from the store and write drift_reports (SQLite and PostgreSQL via ``db``)."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import sqlalchemy as sa

from tuneloop.errors import ValidationError
from tuneloop.ids import new_id
from tuneloop.monitor.behaviour import DAY
from tuneloop.monitor.reports import (Window, behaviour_report, embedding_drift_report, latest_drift,
                                      list_drift_reports, load_queries, operations_report, windows_before,
                                      write_drift_report)
from tuneloop.store import schema

from monitor_helpers import COOKING, SUPPORT, insert, interaction, queries

END = 100 * DAY
def fill_windows(db, current_templates: list[str], seed: int = 0) -> tuple[Window, Window]:
    rng = random.Random(seed)
    reference, current = windows_before(END, 7, 1)
    rows = [interaction(reference.start + (i + 0.5) * (7 * DAY / 300), q)
            for i, q in enumerate(queries(300, SUPPORT, rng))]
    rows += [interaction(current.start + (i + 0.5) * (DAY / 200), q)
             for i, q in enumerate(queries(200, current_templates, rng))]
    rows.append(interaction(current.start + 10, "span text", kind="span"))   # spans are not queries
    insert(db, schema.interactions, rows)
    return reference, current


def test_embedding_drift_report_written_and_read_back(db, embedder):
    reference, current = fill_windows(db, SUPPORT + COOKING)    # a new topic in ~40% of today's queries
    report_id, suite = embedding_drift_report(db, embedder, reference=reference, current=current)
    assert suite.drifted and suite.n_reference == 300 and suite.n_current == 200
    latest = latest_drift(db, "embedding")
    assert latest.id == report_id and latest.drifted and latest.kind == "embedding"
    assert latest.window["current"]["n"] == 200 and latest.window["reference"]["days"] == pytest.approx(7)
    assert latest.metrics["methods"]["mmd"]["drifted"] is True
    assert latest.metrics["embedder"] == "HashingEmbedder"
    # what the loop's drift trigger reads: the newest embedding row of drift_reports
    d = schema.drift_reports
    row = db.fetch_one(sa.select(d).where(d.c.kind == "embedding").order_by(d.c.created_at.desc()).limit(1))
    assert row["id"] == report_id and row["drifted"] is True


def test_same_distribution_is_not_drift(db, embedder):
    reference, current = fill_windows(db, SUPPORT, seed=1)
    report_id, suite = embedding_drift_report(db, embedder, reference=reference, current=current,
                                              options={"mmd": {"n_permutations": 100}})
    assert not suite.drifted
    assert latest_drift(db).id == report_id and not latest_drift(db).drifted


def test_embedding_report_needs_enough_queries(db, embedder):
    reference, current = windows_before(END, 7, 1)
    insert(db, schema.interactions, [interaction(current.start + 1, "hello")])
    with pytest.raises(ValidationError, match="reference window has 0 queries"):
        embedding_drift_report(db, embedder, reference=reference, current=current)
    assert latest_drift(db) is None


def test_load_queries_samples_within_the_window(db):
    w = Window(0.0, 10.0)
    insert(db, schema.interactions, [interaction(float(t), f"q{t}") for t in range(20)]
           + [interaction(5.0, "")])
    got = load_queries(db, w, limit=None)
    assert sorted(got) == sorted(f"q{t}" for t in range(10))
    sample = load_queries(db, w, limit=4)
    assert len(sample) == 4 and set(sample) <= set(got)
    with pytest.raises(ValidationError):
        Window(5.0, 5.0)


def test_behaviour_report_trend_rates_golden_and_topics(db, embedder):
    rng = np.random.default_rng(0)
    inter, fb = [], []
    for day in range(30):
        for k in range(12):
            version = "v1" if k % 2 else "v2"
            i = interaction(END - (30 - day) * DAY + k * 60, queries(1, SUPPORT, random.Random(day * 100 + k))[0],
                            version_id=version)
            inter.append(i)
            up = rng.random() < 0.9 - 0.02 * day                 # satisfaction declines over the month
            fb.append({"id": new_id(), "interaction_id": i["id"], "kind": "thumbs", "value": 1 if up else -1,
                       "ts": i["ts"] + 5})
            if k == 0:
                fb.append({"id": new_id(), "interaction_id": i["id"], "kind": "regenerate", "value": None,
                           "ts": i["ts"] + 6})
    insert(db, schema.interactions, inter)
    insert(db, schema.feedback, fb)
    results = lambda passed: [{"id": f"g{j}", "passed": j < passed, "score": float(j < passed)}  # noqa: E731
                              for j in range(40)]
    insert(db, schema.eval_runs, [
        {"id": new_id(), "version_id": "v1", "n": 40, "pass_rate": 1.0, "results": results(40), "created_at": 1.0},
        {"id": new_id(), "version_id": "v2", "n": 40, "pass_rate": 0.7, "results": results(28), "created_at": 2.0}])
    report_id, metrics = behaviour_report(db, end=END, embedder=embedder)
    assert metrics["drifted"] and metrics["trend"]["direction"] == "declining"
    assert set(metrics["satisfaction"]) == {"v1", "v2"}
    assert metrics["rates"]["v2"]["regenerate_rate"] == pytest.approx(1 / 6)
    comparison = metrics["golden"]["comparisons"][0]
    assert (comparison["baseline"], comparison["candidate"], len(comparison["regressions"])) == ("v1", "v2", 12)
    assert comparison["regressed"] is True
    assert metrics["complaint_topics"] and sum(t["share"] for t in metrics["complaint_topics"]) == pytest.approx(1)
    stored = latest_drift(db, "behaviour")
    assert stored.id == report_id and stored.drifted
    assert stored.metrics["trend"]["slope_per_day"] < 0


def test_operations_report_compares_windows(db):
    rng = np.random.default_rng(1)
    reference, current = windows_before(END, 7, 1)
    rows = [interaction(reference.start + i * 600, "q", latency_ms=float(rng.lognormal(np.log(100), 0.2)),
                        status="ok") for i in range(500)]
    rows += [interaction(current.start + i * 400, "q", latency_ms=float(rng.lognormal(np.log(300), 0.2)),
                         status="error" if i % 5 == 0 else "ok") for i in range(200)]
    insert(db, schema.interactions, rows)
    report_id, metrics = operations_report(db, end=END)
    fired = {c["name"] for c in metrics["checks"] if c["drifted"]}
    assert fired == {"latency_p95_ratio", "error_rate_increase"} and metrics["drifted"]
    assert metrics["current"]["errors"]["(all)"]["rate"] == pytest.approx(0.2)
    assert metrics["current"]["throughput"]["n"] == 200
    stored = latest_drift(db, "operations")
    assert stored.id == report_id and stored.window["reference"]["n"] == 500
    # skipped retrieval checks carry nulls, never NaN (PostgreSQL JSONB rejects NaN)
    assert "NaN" not in json.dumps(stored.metrics)


def test_write_and_list_reports(db):
    a = write_drift_report(db, "embedding", {}, {"value": float("nan"), "x": [np.float32(1.5)]}, False,
                           created_at=1.0)
    b = write_drift_report(db, "operations", {}, {}, True, created_at=2.0)
    assert [r.id for r in list_drift_reports(db)] == [b, a]
    assert [r.id for r in list_drift_reports(db, kind="embedding")] == [a]
    assert latest_drift(db, "embedding").metrics == {"value": None, "x": [1.5]}
    with pytest.raises(ValidationError, match="kind"):
        write_drift_report(db, "vibes", {}, {}, False)
