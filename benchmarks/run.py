"""`make bench`: every benchmark in turn; each writes benchmarks/results/<name>.json.

`python -m benchmarks.run [--quick] [--only NAME ...]`. Speed targets live here, not in tests.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time

BENCHES = {
    "capture": [], "http": [], "experiments": [], "datasets": [], "drift": [], "eval": [],
    "train": [], "dashboard": [], "load": [], "loop": [], "retrieval": [], "trace": [],
    "demo": [],
}
QUICK = {"capture": ["--quick"], "http": ["--quick"], "experiments": ["--quick"], "datasets": ["--rows", "100000"],
         "drift": ["--repeats", "1"], "eval": ["--quick"], "train": ["--quick"], "dashboard": ["--rows", "100000"],
         "load": ["--quick"], "loop": ["--quick"], "retrieval": ["--quick"], "trace": ["--quick"],
         "demo": ["--quick"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smaller sizes everywhere")
    ap.add_argument("--only", nargs="*", help="benchmark names to run")
    args = ap.parse_args()
    failed = []
    for name, flags in BENCHES.items():
        if args.only and name not in args.only:
            continue
        cmd = [sys.executable, "-m", f"benchmarks.bench_{name}", *(QUICK[name] if args.quick else flags)]
        print(f"== {name}: {' '.join(cmd[2:])}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd)
        print(f"== {name}: exit {rc} in {time.perf_counter() - t0:.0f}s", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
