"""Loop benchmarks (`python -m benchmarks.bench_loop`): results in benchmarks/results/loop.json.

1. A/A false promotions: the champion against an identical copy, through the real
   ABTestManager and store, looked at after every batch of traffic. Target <= 5%.
2. The fast demo world: cycles per hour, satisfaction lift per cycle, time per stage
   (read from a `tuneloop demo --fast` run).
"""
from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.progress import track

RESULTS = Path(__file__).parent / "results" / "loop.json"


def aa_once(seed: int, looks: int, per_arm: int, p: float) -> str:
    from tuneloop.experiments.manager import ABTestManager
    from tuneloop.ids import new_id, now
    from tuneloop.registry.versions import Registry
    from tuneloop.store import Database, schema

    db = Database.open("sqlite:///:memory:")
    reg = Registry(db)
    reg.register("v0", backend="scripted")
    reg.promote("v0")
    mgr = ABTestManager(db, {"initial_challenger_traffic": 0.5, "min_duration_hours": 0, "min_samples_per_version": 100,
                             "primary_metric": "positive_feedback_rate", "min_improvement_threshold": 0.0,
                             "sequential_tuning_samples": 1000})
    exp = mgr.deploy_challenger("v0-copy", backend="scripted")
    rng = random.Random(seed)
    for look in range(looks):
        rows, fb = [], []
        for arm, version in (("control", "v0"), ("treatment", "v0-copy")):
            for k in range(per_arm):
                iid = new_id()
                rows.append({"id": iid, "ts": now(), "user_id": f"{arm}-{look}-{k}", "model": "m", "version_id": version,
                             "experiment_id": exp.id, "arm": arm, "latency_ms": 10.0})
                fb.append({"id": new_id(), "interaction_id": iid, "kind": "thumbs", "value": 1 if rng.random() < p else -1, "ts": now()})
        with db.begin() as conn:
            conn.execute(schema.interactions.insert(), rows)
            conn.execute(schema.feedback.insert(), fb)
        if mgr.auto_promote_if_ready():
            return "promoted"
        if mgr.experiment is None:
            return "stopped"
    return "undecided"


def aa_benchmark(reps: int, looks: int, per_arm: int, p: float = 0.3) -> dict:
    t0 = time.perf_counter()
    outcomes = [aa_once(s, looks, per_arm, p) for s in track(range(reps), description="A/A cycles")]
    counts = {k: outcomes.count(k) for k in ("promoted", "stopped", "undecided")}
    return {"experiments": reps, "looks": looks, "per_arm_per_look": per_arm, "rate": p, **counts,
            "false_promotion_rate": counts["promoted"] / reps, "target": 0.05, "seconds": round(time.perf_counter() - t0, 1)}


def demo_benchmark(budget: float) -> dict:
    out = Path(tempfile.mkdtemp(prefix="tuneloop-bench-demo-"))
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "tuneloop.cli", "demo", "--fast", "--data-dir", str(out), "--budget", str(budget)],
                          capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    report = json.loads((out / "fast" / "report.json").read_text())
    promoted = [d for d in report["decisions"] if d["state"] == "promoted"]
    cycles = [c for c in report["per_cycle"] if c["n"]]
    lifts = [b["rate"] - a["rate"] for a, b in zip(cycles, cycles[1:])]
    return {"exit_code": done.returncode, "seconds": round(seconds, 1), "cycles_started": len(report["decisions"]),
            "promotions": len(promoted), "cycles_per_hour": round(len(report["decisions"]) / (report["seconds"] / 3600), 1),
            "satisfaction_per_cycle": [{"champion": c["champion"], "rate": c["rate"], "ci95": c["ci95"]} for c in cycles],
            "lift_per_cycle": lifts, "lift": report["lift"], "stage_seconds": report["stage_seconds"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--skip-demo", action="store_true")
    args = ap.parse_args()
    reps = args.reps or (60 if args.quick else 300)
    result = {"aa": aa_benchmark(reps, looks=8, per_arm=60)}
    print(json.dumps(result["aa"], indent=2))
    if not args.skip_demo:
        result["demo_fast"] = demo_benchmark(300)
        print(json.dumps(result["demo_fast"], indent=2))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
