"""Latency percentiles, throughput, error rate, retrieval hit rate, window comparison."""
from __future__ import annotations

import numpy as np
import pytest
from statsmodels.stats.proportion import proportion_confint

from tuneloop.monitor.operations import (ALL, OperationsThresholds, error_rates, latency_percentiles,
                                         operations_drift, retrieval_stats, throughput, wilson_interval)


def test_latency_percentiles_match_numpy_and_a_hand_value():
    rng = np.random.default_rng(0)
    lat = rng.lognormal(5, 0.5, 1000)
    rows = [{"version_id": "v1" if i % 2 else "v2", "latency_ms": float(x)} for i, x in enumerate(lat)]
    rows.append({"version_id": "v1", "latency_ms": None})
    stats = latency_percentiles(rows)
    v1 = lat[1::2]
    assert stats["v1"].n == 500
    assert (stats["v1"].p50, stats["v1"].p95, stats["v1"].p99) == pytest.approx(tuple(np.percentile(v1, [50, 95, 99])))
    assert stats[ALL].n == 1000 and stats[ALL].max == pytest.approx(lat.max())
    # 1..100: linear interpolation puts p95 at 95 + 0.05 * (96 - 95)
    hand = latency_percentiles([{"latency_ms": float(x)} for x in range(1, 101)])[ALL]
    assert (hand.p50, hand.p95, hand.p99) == pytest.approx((50.5, 95.05, 99.01))


def test_throughput():
    t = throughput([0.0, 1.0, 2.0, 61.0, 62.0, 119.0], start=0.0, end=120.0)
    assert t.n == 6 and t.per_second == pytest.approx(6 / 120) and t.per_minute == pytest.approx(3.0)
    assert t.peak_per_minute == 3
    assert throughput([]).n == 0


def test_error_rates_with_wilson_interval_matching_statsmodels():
    rows = [{"version_id": "v1", "status": "error" if i < 7 else "ok"} for i in range(50)]
    rows += [{"version_id": "v2", "status": "ok", "error": "boom"}]
    rates = error_rates(rows)
    assert rates["v1"].errors == 7 and rates["v1"].rate == pytest.approx(0.14)
    lo, hi = proportion_confint(7, 50, method="wilson")
    assert (rates["v1"].ci_low, rates["v1"].ci_high) == pytest.approx((lo, hi))
    assert rates["v2"].errors == 1 and rates[ALL].n == 51
    assert wilson_interval(0, 0) == (0.0, 1.0)


def retrieval_row(hit_rank: int | None, top_score: float = 0.8, n_docs: int = 3) -> dict:
    docs = [{"id": f"d{r}", "score": top_score - 0.1 * (r - 1), "rank": r, "clicked": r == hit_rank,
             "used": False, "skipped": r != hit_rank} for r in range(1, n_docs + 1)]
    return {"meta": {"retrieval": {"query": "q", "docs": docs}}}


def test_retrieval_hit_rate_mrr_and_rates():
    rows = [retrieval_row(1), retrieval_row(2), retrieval_row(None), {"meta": None}, {"meta": {"other": 1}}]
    # a log without ranks: list order is the rank; "used" counts as relevant
    rows.append({"meta": {"retrieval": {"docs": [{"id": "a", "score": 0.5}, {"id": "b", "used": True}]}}})
    s = retrieval_stats(rows)
    assert s.logged == 4 and s.hits == 3 and s.hit_rate == 0.75
    assert s.mrr == pytest.approx((1 + 1 / 2 + 0 + 1 / 2) / 4)
    assert s.clicked_rate == pytest.approx(2 / 11) and s.used_rate == pytest.approx(1 / 11)
    assert s.top_scores == pytest.approx((0.8, 0.8, 0.8, 0.5))


def ops_rows(n: int, rng, *, latency: float = 100.0, error_p: float = 0.01, hit_p: float = 0.8,
             score: float = 0.8) -> list[dict]:
    rows = []
    for i in range(n):
        row = retrieval_row(1 if rng.random() < hit_p else None, top_score=score + 0.05 * rng.standard_normal())
        row.update(ts=float(i), version_id="v1", latency_ms=float(rng.lognormal(np.log(latency), 0.3)),
                   status="error" if rng.random() < error_p else "ok")
        rows.append(row)
    return rows


def test_operations_drift_detects_each_degradation_and_not_noise():
    rng = np.random.default_rng(2)
    ref = ops_rows(600, rng)
    assert not operations_drift(ref, ops_rows(300, rng)).drifted
    cases = {"latency_p95_ratio": dict(latency=200.0), "error_rate_increase": dict(error_p=0.08),
             "retrieval_hit_rate_drop": dict(hit_p=0.5), "retrieval_score_ks": dict(score=0.7)}
    for check, kwargs in cases.items():
        result = operations_drift(ref, ops_rows(300, rng, **kwargs))
        fired = {c.name for c in result.checks if c.drifted}
        assert fired == {check}, (check, fired)


def test_operations_checks_skip_small_windows():
    rng = np.random.default_rng(3)
    result = operations_drift(ops_rows(10, rng), ops_rows(10, rng, latency=1000.0), OperationsThresholds(min_rows=30))
    assert not result.drifted and all(c.skipped for c in result.checks)
