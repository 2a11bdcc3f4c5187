"""Dashboard benchmark: server time of the overview page with 1,000,000 interactions stored.

    python -m benchmarks.bench_dashboard                 # 1,000,000 interactions in SQLite
    python -m benchmarks.bench_dashboard --rows 200000   # quicker
    python -m benchmarks.bench_dashboard --db /tmp/dash.db   # keep (and reuse) the store

Writes benchmarks/results/dashboard.json.

1. Fill a SQLite store: ``--rows`` interactions over 90 days (two versions, the last 7 days
   an A/B experiment at 25% treatment), ~30% of them with thumbs or rating feedback, plus a
   champion, a challenger, drift reports and a loop run. Rows go in with ``executemany`` in
   transactions of 100,000 through sqlite3 directly (the schema and its indexes come from
   ``Database.open``).
2. Serve the dashboard in process (``create_app`` + ``mount_dashboard``, signed in with a read
   key) and read the server time of each request from its ``Server-Timing`` header (from the
   request entering the app to the response starting: auth, queries, rendering).
   Overview: the first request (the daily rollup of 30 days is computed, every cache cold),
   then ``--repeats`` warm ones that re-read today's totals and recount all interactions on
   every request (in service today is re-read every 15 s, closed days every 10 min, the
   count every 60 s), then ``--repeats`` with those caches as in service. The live experiment's comparison is its own request (the page loads it after
   showing): cold and memoised. Also the interactions browser (first page, a filtered page,
   a deep keyset page) and the drift list.

Target (issue 8): overview <= 200 ms server time at 1,000,000 interactions.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "dashboard.json"
TARGET_MS = 200.0
DAY = 86400.0
TOPICS = ["reset my password", "cancel my subscription", "update billing address", "export my data",
          "change the language", "delete my account", "invoice for last month", "two factor login",
          "connect the calendar", "share a dashboard", "set up single sign-on", "raise the rate limit"]
_INSERT_I = ("INSERT INTO interactions (id, ts, kind, user_id, session_id, model, version_id, experiment_id, arm, "
             "query, messages, response, latency_ms, status, reward, quality_score, prompt_tokens, completion_tokens, "
             "consent) VALUES (?, ?, 'chat', ?, ?, 'support-bot', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 24, 60, 1)")
_INSERT_F = "INSERT INTO feedback (id, interaction_id, kind, value, source, ts) VALUES (?, ?, ?, ?, 'user', ?)"


def _rows(n: int, end: float, exp_id: str, seed: int = 0):
    """Interaction and feedback tuples, oldest first, in chunks of 100,000."""
    rng = random.Random(seed)
    start, exp_start = end - 90 * DAY, end - 7 * DAY
    step = (end - start) / n
    inter, fb = [], []
    for i in range(n):
        ts = start + i * step + rng.random() * step
        iid = f"{int(ts * 1000):013x}-{i:08x}"
        in_exp = ts >= exp_start
        arm = ("treatment" if rng.random() < 0.25 else "control") if in_exp else None
        version = "v2" if arm == "treatment" else "v1"
        topic = TOPICS[i % len(TOPICS)]
        query = f"How do I {topic}? I tried the settings page but it did not work (ticket {i % 9973})."
        messages = json.dumps([{"role": "user", "content": query}])
        response = f"To {topic}, open Settings, choose the account tab and follow the three steps shown there."
        error = rng.random() < 0.01
        inter.append((iid, ts, f"user{i % 20000}", f"s{i % 60000}", version, exp_id if in_exp else None, arm, query,
                      messages, response, 150.0 + rng.expovariate(1 / 250.0), "error" if error else "ok",
                      rng.choice((-1.0, 0.0, 1.0)), rng.random()))
        r = rng.random()
        if r < 0.22:
            p_up = 0.72 - 0.1 * (ts - start) / (end - start) + (0.04 if arm == "treatment" else 0.0)
            fb.append((f"f{iid}", iid, "thumbs", 1.0 if rng.random() < p_up else -1.0, ts + 20))
        elif r < 0.30:
            fb.append((f"f{iid}", iid, "rating", float(rng.randint(1, 5)), ts + 30))
        if len(inter) == 100_000:
            yield inter, fb
            inter, fb = [], []
    if inter:
        yield inter, fb


def _seed_domain(db: Any, end: float) -> str:
    """Versions, experiment, drift reports, a loop run: through the packages."""
    from tuneloop.experiments.manager import ABTestConfig, ABTestManager
    from tuneloop.monitor.reports import write_drift_report
    from tuneloop.registry.versions import Registry
    from tuneloop.store import schema

    reg = Registry(db)
    reg.register("v1", backend="scripted", base_model="SmolLM2-135M-Instruct")
    reg.promote("v1")
    exp = ABTestManager(db, ABTestConfig(min_duration_hours=0)).deploy_challenger(
        "v2", backend="scripted", base_model="SmolLM2-135M-Instruct", parent_id="v1", traffic_weight=0.25)
    with db.begin() as conn:  # the experiment has run for 7 days
        conn.execute(schema.experiments.update().values(started_at=end - 7 * DAY))
        conn.execute(schema.loop_runs.insert(), {"id": "run1", "state": "experimenting", "started_at": end - 7.1 * DAY,
                                                 "updated_at": end - 7 * DAY, "version_id": "v2",
                                                 "details": {"history": [["triggered", end - 7.1 * DAY],
                                                                         ["experimenting", end - 7 * DAY]]}})
    for kind in ("embedding", "behaviour", "operations"):
        write_drift_report(db, kind, {"current": {"start": end - DAY, "end": end}}, {"drifted_methods": []}, False)
    return exp.id


def fill(path: Path, n: int) -> dict[str, Any]:
    from tuneloop.store import Database

    end = time.time()
    db = Database.open(f"sqlite:///{path}")
    exp_id = _seed_domain(db, end)
    db.close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")  # a benchmark load, not production writes
    t0, total_i, total_f = time.perf_counter(), 0, 0
    for inter, fb in _rows(n, end, exp_id):
        with conn:
            conn.executemany(_INSERT_I, inter)
            conn.executemany(_INSERT_F, fb)
        total_i, total_f = total_i + len(inter), total_f + len(fb)
        print(f"  {total_i:,} interactions, {total_f:,} feedback ({time.perf_counter() - t0:.0f} s)", flush=True)
    conn.execute("ANALYZE")
    conn.close()
    seconds = time.perf_counter() - t0
    return {"interactions": total_i, "feedback": total_f, "seconds": round(seconds, 1),
            "rows_per_s": round((total_i + total_f) / seconds)}


def _ms(response) -> float:
    return float(response.headers["server-timing"].split("dur=")[1])


def _stats(values: list[float]) -> dict[str, float]:
    s = sorted(values)
    return {"p50_ms": round(statistics.median(s), 1), "p95_ms": round(s[min(len(s) - 1, int(0.95 * len(s)))], 1),
            "max_ms": round(s[-1], 1), "n": len(s)}


def measure(path: Path, repeats: int) -> dict[str, Any]:
    from fastapi.testclient import TestClient

    from tuneloop.server.app import create_app
    from tuneloop.server.dashboard import mount_dashboard
    from tuneloop.server.keys import create_key
    from tuneloop.store import Database

    db = Database.open(f"sqlite:///{path}")
    key = create_key(db, "read", name="bench").secret
    app = create_app(db=db)
    mount_dashboard(app)
    out: dict[str, Any] = {}
    with TestClient(app) as c:
        assert c.post("/dashboard/login", data={"key": key}, follow_redirects=False).status_code == 303
        c.get("/dashboard/login")  # imports and template compilation happen once per process
        cache = app.state.dashboard.cache
        r = c.get("/dashboard/")
        assert r.status_code == 200, r.text[:500]
        out["overview_cold_ms"] = round(_ms(r), 1)
        cache.rollup.today_ttl_s = 0.0  # re-read today's totals on every request: the steady state's worst
        warm = []
        for _ in range(repeats):
            cache.memo.clear()  # and recount all interactions
            warm.append(_ms(c.get("/dashboard/")))
        out["overview_warm"] = _stats(warm)
        cache.rollup.today_ttl_s = 15.0
        out["overview_cached"] = _stats([_ms(c.get("/dashboard/")) for _ in range(repeats)])
        exp_id = app.state.db.scalar(__import__("sqlalchemy").text("SELECT id FROM experiments LIMIT 1"))
        frag = f"/dashboard/fragments/experiment/{exp_id}"
        out["experiment_fragment_cold_ms"] = round(_ms(c.get(frag)), 1)
        out["experiment_fragment_memoised"] = _stats([_ms(c.get(frag)) for _ in range(5)])
        pages = {"interactions_first_page": "/dashboard/interactions",
                 "interactions_filtered": "/dashboard/interactions?version=v2&feedback=negative",
                 "drift_list": "/dashboard/drift", "versions": "/dashboard/versions", "loop": "/dashboard/loop"}
        for name, url in pages.items():
            out[name] = _stats([_ms(c.get(url)) for _ in range(5)])
        html = c.get("/dashboard/interactions").text
        older = html.split('href="/dashboard/interactions?before=')[1].split('"')[0].replace("&amp;", "&")
        out["interactions_next_page"] = _stats([_ms(c.get(f"/dashboard/interactions?before={older}"))
                                                for _ in range(5)])
    db.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--db", type=Path, default=None, help="SQLite file to fill (reused when it exists)")
    args = parser.parse_args()
    tmp = None
    path = args.db
    if path is None:
        tmp = tempfile.TemporaryDirectory(prefix="tuneloop-bench-dash-")
        path = Path(tmp.name) / "dash.db"
    load = None
    if not path.exists():
        print(f"filling {path} with {args.rows:,} interactions", flush=True)
        load = fill(path, args.rows)
    print("measuring", flush=True)
    result = {"benchmark": "dashboard", "rows": args.rows, "load": load, "target_overview_ms": TARGET_MS,
              **measure(path, args.repeats),
              "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                          "loadavg": [round(x, 2) for x in os.getloadavg()], "db_mb": round(path.stat().st_size / 2**20)}}
    result["meets_target"] = result["overview_warm"]["p50_ms"] <= TARGET_MS
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
