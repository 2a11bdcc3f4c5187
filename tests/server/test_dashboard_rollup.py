"""The overview's cached daily rollup, its trend against the monitor's, and the PCA projection
against scikit-learn."""
from __future__ import annotations

import math

import numpy as np
import pytest

from tuneloop.errors import ValidationError
from tuneloop.monitor.behaviour import satisfaction_trend
from tuneloop.server.dashboard.projection import ProjectionCache, pca_2d
from tuneloop.server.dashboard.rollup import DAY, DailyRollup, DayTotals, Memo, day_start, trend_from_days
from tuneloop.store import schema

MIDNIGHT = 1_750_000_000 // 86400 * 86400.0  # a UTC midnight


def _seed(db, days=30, per_day=12, seed=0):
    """Interactions and feedback over ``days`` days before MIDNIGHT, satisfaction declining."""
    rng = np.random.default_rng(seed)
    inter, fb = [], []
    for d in range(days):
        for k in range(per_day):
            ts = MIDNIGHT - (days - d) * DAY + float(rng.uniform(0, DAY - 1))
            iid = f"i{d:02d}{k:03d}"
            inter.append({"id": iid, "ts": ts, "status": "error" if k == 0 and d % 3 == 0 else "ok"})
            r = rng.random()
            if r < 0.5:
                fb.append({"id": "f" + iid, "interaction_id": iid, "kind": "thumbs", "ts": ts + 1,
                           "value": 1.0 if rng.random() > d / (days * 1.5) else -1.0})
            elif r < 0.8:
                fb.append({"id": "f" + iid, "interaction_id": iid, "kind": "rating", "ts": ts + 1,
                           "value": float(rng.integers(1, 6))})
            elif r < 0.9:
                fb.append({"id": "f" + iid, "interaction_id": iid, "kind": "thumbs", "ts": ts + 1, "value": 0.0})
            else:
                fb.append({"id": "f" + iid, "interaction_id": iid, "kind": "copy", "ts": ts + 1, "value": 1.0})
    with db.begin() as conn:
        conn.execute(schema.interactions.insert(), inter)
        conn.execute(schema.feedback.insert(), fb)
    return inter, fb


def test_day_totals_match_a_count_of_the_rows(db):
    inter, fb = _seed(db, days=5, per_day=20)
    days = DailyRollup(db).days(end=MIDNIGHT - 1, n_days=6)
    assert [d.day for d in days] == [MIDNIGHT - k * DAY for k in range(6, 0, -1)]
    assert days[0].interactions == 0
    for d in days[1:]:
        rows = [r for r in inter if d.day <= r["ts"] < d.day + DAY]
        votes = [f for f in fb if d.day <= f["ts"] < d.day + DAY
                 and (f["kind"] == "rating" or (f["kind"] == "thumbs" and f["value"] != 0))]
        scores = [(1.0 if f["value"] > 0 else 0.0) if f["kind"] == "thumbs" else (f["value"] - 1) / 4 for f in votes]
        assert d.interactions == len(rows)
        assert d.errors == sum(r["status"] == "error" for r in rows)
        assert d.feedback == len(scores)
        assert d.satisfaction_sum == pytest.approx(sum(scores))
        assert d.positive == sum(s > 0.5 for s in scores) and d.negative == sum(s < 0.5 for s in scores)


def test_trend_equals_the_monitor_trend_on_the_same_days(db):
    _, fb = _seed(db)
    days = DailyRollup(db).days(end=MIDNIGHT - 1, n_days=30)
    mine = trend_from_days(days)
    theirs = satisfaction_trend(fb, end=MIDNIGHT, window_days=30)
    assert mine.direction == theirs.direction == "declining"
    assert mine.days == theirs.days and mine.counts == theirs.counts
    assert mine.daily == pytest.approx(theirs.daily) and mine.rolling == pytest.approx(theirs.rolling)
    assert (mine.slope_per_day, mine.p_value) == pytest.approx((theirs.slope_per_day, theirs.p_value))


def test_trend_edge_cases():
    flat = [DayTotals(k * DAY, feedback=4, satisfaction_sum=2.0) for k in range(5)]
    assert (trend_from_days(flat).direction, trend_from_days(flat).p_value) == ("flat", 1.0)
    two = [DayTotals(0.0, feedback=1, satisfaction_sum=1.0), DayTotals(DAY)]
    assert trend_from_days(two).direction == "insufficient" and math.isnan(trend_from_days(two).slope_per_day)
    with pytest.raises(ValidationError):
        trend_from_days([])


def test_rollup_caches_closed_days_and_refreshes_today(db):
    clock = [MIDNIGHT + 3600.0]
    rollup = DailyRollup(db, today_ttl_s=15, past_ttl_s=600, clock=lambda: clock[0])
    insert = schema.interactions.insert()
    with db.begin() as conn:
        conn.execute(insert, [{"id": "old", "ts": MIDNIGHT - 10}, {"id": "now", "ts": MIDNIGHT + 10}])
    assert [d.interactions for d in rollup.days(n_days=2)] == [1, 1]
    with db.begin() as conn:
        conn.execute(insert, [{"id": "old2", "ts": MIDNIGHT - 20}, {"id": "now2", "ts": MIDNIGHT + 20}])
    clock[0] += 10  # within both time-to-lives: cached
    assert [d.interactions for d in rollup.days(n_days=2)] == [1, 1]
    clock[0] += 10  # today is stale, yesterday is not
    assert [d.interactions for d in rollup.days(n_days=2)] == [1, 2]
    clock[0] += 600
    assert [d.interactions for d in rollup.days(n_days=2)] == [2, 2]
    with pytest.raises(ValidationError):
        rollup.days(n_days=0)


def test_day_start_and_memo():
    assert day_start(MIDNIGHT + 5) == MIDNIGHT and day_start(MIDNIGHT - 5) == MIDNIGHT - DAY
    t = [0.0]
    memo, calls = Memo(clock=lambda: t[0]), []
    assert memo.get("k", 10, lambda: calls.append(1) or len(calls)) == 1
    t[0] = 5
    assert memo.get("k", 10, lambda: calls.append(1) or len(calls)) == 1
    t[0] = 11
    assert memo.get("k", 10, lambda: calls.append(1) or len(calls)) == 2


def test_pca_matches_scikit_learn():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(0)
    ref = rng.normal(size=(300, 12)) * np.linspace(3, 0.2, 12)
    cur = rng.normal(size=(200, 12)) * np.linspace(3, 0.2, 12) + 0.8
    p = pca_2d(ref, cur)
    sk = PCA(n_components=2).fit(np.vstack([ref, cur]))
    assert p.explained_variance_ratio == pytest.approx(tuple(sk.explained_variance_ratio_))
    ours = np.vstack([p.reference, p.current])
    theirs = sk.transform(np.vstack([ref, cur]))
    for k in range(2):  # same axes up to sign
        assert np.allclose(ours[:, k], theirs[:, k], atol=1e-8) or np.allclose(ours[:, k], -theirs[:, k], atol=1e-8)
    # the convention: each component's largest loading is positive, so the picture never flips
    assert all(c[np.argmax(np.abs(c))] > 0 for c in p.components)
    d = p.to_dict()
    assert len(d["reference"]) == 300 and len(d["current"][0]) == 2


def test_pca_shows_a_shift_along_the_first_axis():
    rng = np.random.default_rng(1)
    ref, cur = rng.normal(size=(200, 16)), rng.normal(size=(200, 16))
    cur[:, 3] += 4.0
    p = pca_2d(ref, cur)
    gap = abs(p.current[:, 0].mean() - p.reference[:, 0].mean())
    assert gap > 3.0 and p.explained_variance_ratio[0] > 0.2


@pytest.mark.parametrize("ref, cur, match", [
    (np.zeros((3, 4)), np.zeros((3, 5)), "dims"),
    (np.zeros(4), np.zeros((3, 4)), "2-D"),
    (np.zeros((1, 4)), np.zeros((1, 4)), "at least 3 rows"),
    (np.full((3, 4), np.nan), np.zeros((3, 4)), "NaN"),
])
def test_pca_rejects_bad_input(ref, cur, match):
    with pytest.raises(ValidationError, match=match):
        pca_2d(ref, cur)


def test_projection_cache_computes_once_and_evicts():
    calls = []
    cache = ProjectionCache(lambda rid: calls.append(rid) or {"id": rid}, size=2)
    assert cache.get("a") == {"id": "a"} and cache.get("a") == {"id": "a"}
    cache.get("b"), cache.get("c"), cache.get("a")
    assert calls == ["a", "b", "c", "a"]
