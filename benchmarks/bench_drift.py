"""Benchmark: the full embedding-drift suite on 100,000 x 384 reference vs current windows.

Target (issue 8): <= 10 s in total on 2 CPU cores, per-method seconds reported, for a
no-shift case and a planted-shift case (a new topic in 10% of current traffic).

    python -m benchmarks.bench_drift            # writes benchmarks/results/drift.json
    python -m benchmarks.bench_drift --rows 20000 --repeats 1

The embeddings are synthetic but shaped like sentence embeddings: a mixture of topic
centres plus a shared component plus noise, L2-normalized, float32.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from tuneloop.monitor.drift import DEFAULT_METHODS, drift_suite

RESULTS = Path(__file__).resolve().parent / "results" / "drift.json"


def make_world(dim: int, topics: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((topics + 1, dim)).astype(np.float32)  # the last one is the new topic
    shared = rng.standard_normal(dim).astype(np.float32)
    return centres, shared


def sample(n: int, centres: np.ndarray, shared: np.ndarray, rng: np.random.Generator,
           new_topic_share: float = 0.0) -> np.ndarray:
    known = len(centres) - 1
    topic = rng.integers(0, known, n)
    if new_topic_share:
        topic = np.where(rng.random(n) < new_topic_share, known, topic)
    x = 0.6 * centres[topic] + 0.8 * shared + rng.standard_normal((n, centres.shape[1]), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def run_case(reference: np.ndarray, current: np.ndarray, repeats: int) -> dict:
    runs = [drift_suite(reference, current, seed=i) for i in range(repeats)]
    best = min(runs, key=lambda s: s.total_seconds)
    return {
        "total_seconds_best": round(best.total_seconds, 3),
        "total_seconds_all": [round(s.total_seconds, 3) for s in runs],
        "seconds_per_method_best": {m: round(min(s.seconds[m] for s in runs), 3) for m in DEFAULT_METHODS},
        "seconds_per_method_median": {m: round(float(np.median([s.seconds[m] for s in runs])), 3)
                                      for m in DEFAULT_METHODS},
        # one seed per repeat: how often each method (and the quorum-of-2 suite) said "drift"
        "suite_drifted_in": f"{sum(s.drifted for s in runs)}/{repeats}",
        "method_drifted_in": {m: f"{sum(s[m].drifted for s in runs)}/{repeats}" for m in DEFAULT_METHODS},
        "values_seed0": {r.method: {"value": round(r.value, 5), "threshold": round(r.threshold, 5),
                                    "p_value": None if r.p_value is None else round(r.p_value, 5),
                                    "drifted": r.drifted} for r in runs[0].results},
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    load_at_start = list(os.getloadavg())
    centres, shared = make_world(args.dim, topics=20, seed=0)
    rng = np.random.default_rng(1)
    t0 = time.perf_counter()
    reference = sample(args.rows, centres, shared, rng)
    same = sample(args.rows, centres, shared, rng)
    shifted = sample(args.rows, centres, shared, rng, new_topic_share=0.10)
    generate_s = time.perf_counter() - t0

    cases = {}
    for name, current in (("no_shift", same), ("new_topic_10pct", shifted)):
        print(f"[bench_drift] {name}: {args.rows} x {args.dim}, {args.repeats} repeats ...", flush=True)
        cases[name] = run_case(reference, current, args.repeats)
        c = cases[name]
        print(f"[bench_drift] {name}: best total {c['total_seconds_best']} s (all {c['total_seconds_all']}), "
              f"suite drifted in {c['suite_drifted_in']}", flush=True)
        for method, sec in c["seconds_per_method_best"].items():
            print(f"    {method:15s} {sec:7.3f} s  drifted in {c['method_drifted_in'][method]}")

    result = {
        "benchmark": "drift_suite", "rows": args.rows, "dim": args.dim, "dtype": "float32",
        "target_total_seconds": 10.0, "repeats": args.repeats, "generate_seconds": round(generate_s, 2),
        "cases": cases,
        "meets_target": all(c["total_seconds_best"] <= 10.0 for c in cases.values()),
        "machine": {"cpus": os.cpu_count(), "load_average_at_start": load_at_start,
                    "load_average_at_end": list(os.getloadavg()),
                    "python": platform.python_version(), "numpy": np.__version__},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"[bench_drift] wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
