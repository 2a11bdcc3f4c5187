"""Benchmark: assignment cost per request, and A/A false-positive rates under peeking.

Targets (issue 4): assignment <= 5 µs per call; the sequential test's false-positive rate
<= 5% when checked after every batch, while the naive fixed-horizon test checked the same
way exceeds it.

    python -m benchmarks.bench_experiments            # writes benchmarks/results/experiments.json
    python -m benchmarks.bench_experiments --quick

Parts:
- ``assignment``: ns per call of ``bucket()``, each mode's assigner, and
  ``ExperimentRouter.route`` (the gateway's hot path: cached snapshot + assigner).
- ``aa``: A/A experiments (binary and continuous metric), each checked after every batch;
  the share with any p < 0.05 for the naive z/t test and for the mSPRT always-valid p-value,
  at 10, 50 and 100 looks; the naive test looked at once is shown as the 5% reference.
- ``power``: the same with a true lift (+10% binary, +3% continuous): what always-valid
  inference costs in power against a single fixed-horizon look.
- ``analysis``: seconds for ``compare_models()`` over an experiment of ``--rows`` interactions
  with feedback, in SQLite.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import stats as sp

from tuneloop.experiments import ABTestConfig, ABTestManager, ExperimentRouter, make_assigner, start_experiment
from tuneloop.experiments.assignment import bucket
from tuneloop.experiments.stats import msprt_path
from tuneloop.ids import new_id, now
from tuneloop.registry import Registry
from tuneloop.store import Database, schema

RESULTS = Path(__file__).resolve().parent / "results" / "experiments.json"


def _ns_per_call(fn, users: list[str], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter_ns()
        for u in users:
            fn(u)
        best = min(best, (time.perf_counter_ns() - t) / len(users))
    return round(best, 1)


def bench_assignment(n_users: int, repeats: int) -> dict:
    users = [f"user-{i}" for i in range(n_users)]
    out = {"bucket": _ns_per_call(lambda u: bucket("salt", u), users, repeats)}
    post = {"control": (30, 70), "treatment": (40, 60)}
    for mode, kw in [("ab", {"treatment_weight": 0.1}), ("canary", {"treatment_weight": 0.05}),
                     ("shadow", {"shadow_rate": 1.0}), ("bandit", {"posteriors": post})]:
        a = make_assigner(mode, "v1", "v2", salt="bench", **kw)
        out[mode] = _ns_per_call(a.assign, users, repeats)
    anonymous = make_assigner("ab", "v1", "v2", salt="bench", treatment_weight=0.1)
    out["ab_anonymous"] = _ns_per_call(lambda _: anonymous.assign(None), users, repeats)
    with tempfile.TemporaryDirectory() as tmp:
        db = Database.open(f"sqlite:///{tmp}/bench.db")
        reg = Registry(db)
        for v in ("v1", "v2"):
            reg.register(v, backend="scripted")
        reg.promote("v1")
        start_experiment(db, "v1", "v2", traffic_weight=0.1, config=ABTestConfig())
        router = ExperimentRouter(db, ttl_s=3600)
        router.route("tuneloop", "warm")
        out["router_route"] = _ns_per_call(lambda u: router.route("tuneloop", u), users, repeats)
        db.close()
    return {"ns_per_call": out, "users": n_users, "target_ns": 5000,
            "meets_target": all(v <= 5000 for v in out.values())}


def _aa_binary(rng, experiments: int, looks: int, batch: int, p_a: float, p_b: float):
    n = np.broadcast_to(batch * np.arange(1, looks + 1), (experiments, looks)).astype(float)
    sa = rng.binomial(batch, p_a, (experiments, looks)).cumsum(axis=1)
    sb = rng.binomial(batch, p_b, (experiments, looks)).cumsum(axis=1)
    pooled = (sa + sb) / (2 * n)
    naive_p = 2 * sp.norm.sf(np.abs((sb - sa) / n / np.sqrt(pooled * (1 - pooled) * 2 / n)))
    la, lb = (sa + 1) / (n + 2), (sb + 1) / (n + 2)
    seq_p, _ = msprt_path(sa / n, la * (1 - la), n, sb / n, lb * (1 - lb), n, running_min=False)
    return naive_p, seq_p


def _aa_continuous(rng, experiments: int, looks: int, batch: int, lift: float):
    n = np.broadcast_to(batch * np.arange(1, looks + 1), (experiments, looks)).astype(float)

    def cumulative(scale: float):
        x = rng.exponential(scale, (experiments, looks, batch))
        s, ss = x.sum(axis=2).cumsum(axis=1), (x * x).sum(axis=2).cumsum(axis=1)
        return s / n, (ss - s * s / n) / (n - 1)

    ma, va = cumulative(1.0)
    mb, vb = cumulative(1.0 + lift)
    naive_p = 2 * sp.norm.sf(np.abs((mb - ma) / np.sqrt(va / n + vb / n)))
    seq_p, _ = msprt_path(ma, va, n, mb, vb, n, running_min=False)
    return naive_p, seq_p


def _rates(naive_p: np.ndarray, seq_p: np.ndarray, looks_list: list[int]) -> dict:
    total = naive_p.shape[1]
    out = {}
    for looks in looks_list:
        # `looks` evenly spaced checks over the same data; "any look < 0.05" is the
        # always-valid p-value (running minimum) for the sequential test
        idx = np.unique(np.linspace(0, total - 1, looks).round().astype(int))
        out[f"{looks}_looks"] = {"naive_peeking": float((naive_p[:, idx] < 0.05).any(axis=1).mean()),
                                 "sequential": float((seq_p[:, idx] < 0.05).any(axis=1).mean())}
    out["naive_single_look_at_end"] = float((naive_p[:, -1] < 0.05).mean())
    return out


def bench_aa(experiments: int, batch: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    looks = [10, 50, 100]
    t = time.perf_counter()
    binary = _rates(*_aa_binary(rng, experiments, 100, batch, 0.2, 0.2), looks)
    continuous = _rates(*_aa_continuous(rng, experiments, 100, batch, 0.0), looks)
    power_b = _rates(*_aa_binary(rng, experiments, 100, batch, 0.2, 0.22), [100])
    power_c = _rates(*_aa_continuous(rng, experiments, 100, batch, 0.03), [100])
    return {"experiments": experiments, "batch_per_arm": batch, "max_looks": 100, "alpha": 0.05,
            "false_positive_rate": {"binary_p0.2": binary, "continuous_exponential": continuous},
            "power_with_true_lift": {"binary_0.20_to_0.22": power_b, "continuous_mean_x1.03": power_c},
            "seconds": round(time.perf_counter() - t, 2)}


def bench_analysis(rows: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        db = Database.open(f"sqlite:///{tmp}/bench.db")
        reg = Registry(db)
        for v in ("v1", "v2"):
            reg.register(v, backend="scripted")
        reg.promote("v1")
        exp = start_experiment(db, "v1", "v2", traffic_weight=0.5, config=ABTestConfig(min_duration_hours=0))
        t0 = now()
        arm = rng.random(rows) < 0.5
        interactions = [{"id": new_id(), "ts": t0, "user_id": f"u{i}", "version_id": "v2" if a else "v1",
                         "experiment_id": exp.id, "arm": "treatment" if a else "control",
                         "latency_ms": float(rng.exponential(100)), "reward": float(rng.random() < 0.5)}
                        for i, a in enumerate(arm)]
        feedback = [{"id": new_id(), "interaction_id": r["id"], "kind": "thumbs", "value": 1.0 if rng.random() < 0.5
                     else -1.0, "source": "user", "ts": t0} for r in interactions[::2]]
        with db.begin() as conn:
            db.insert_ignore(conn, schema.interactions, interactions)
            db.insert_ignore(conn, schema.feedback, feedback)
        ab = ABTestManager(db, ABTestConfig(min_duration_hours=0))
        t = time.perf_counter()
        cmp = ab.compare_models()
        seconds = time.perf_counter() - t
        db.close()
    return {"interactions": rows, "feedback": len(feedback), "compare_models_seconds": round(seconds, 3),
            "decision": cmp.decision}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller runs (for CI smoke checks)")
    ap.add_argument("--experiments", type=int, default=2000)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    experiments = 500 if args.quick else args.experiments
    rows = 10_000 if args.quick else args.rows
    result = {
        "benchmark": "experiments",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "assignment": bench_assignment(20_000 if args.quick else 100_000, 3 if args.quick else 5),
        "aa": bench_aa(experiments, 100, args.seed),
        "analysis": bench_analysis(rows, args.seed),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
