"""The main job as a benchmark: `tuneloop demo` end to end, timed, its report kept.

Full (default): SmolLM2-135M-Instruct in the capitals world, results in
benchmarks/results/demo_full.json and demo_full_satisfaction.png, with the wall time
against the 15-minute target. ``--quick``: the tiny model (``tuneloop demo --fast``),
results in demo_fast.json.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def run(quick: bool, cache_dir: Path | None) -> dict:
    name = "demo_fast" if quick else "demo_full"
    with tempfile.TemporaryDirectory(prefix="tuneloop-bench-demo-") as tmp:
        data = Path(tmp) / "demo"
        cmd = [sys.executable, "-m", "tuneloop.cli", "demo", "--data-dir", str(data)]
        if quick:
            cmd.append("--fast")
        if cache_dir is not None:
            cmd += ["--cache-dir", str(cache_dir)]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        wall = time.perf_counter() - t0
        out = data / ("fast" if quick else "full")
        report = json.loads((out / "report.json").read_text())
        shutil.copy(out / "satisfaction.png", RESULTS / f"{name}_satisfaction.png")
    lift = report.get("lift") or {}
    report["benchmark"] = {"name": name, "wall_s": round(wall, 1), "target_s": 120 if quick else 900,
                           "within_target": wall <= (120 if quick else 900),
                           "significant_rise": bool(lift.get("significant")), "cache_dir": str(cache_dir)}
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2, default=str))
    return report["benchmark"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="the tiny model (tuneloop demo --fast)")
    ap.add_argument("--cache-dir", type=Path, default=None,
                    help="keep converted/pretrained models here across runs (default: a fresh one, so conversion is timed)")
    args = ap.parse_args(argv)
    print(json.dumps(run(args.quick, args.cache_dir), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
