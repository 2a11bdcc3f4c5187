"""Load: the gateway and the ingestion API under sustained load while a model trains, then a
soak of the SDK in remote mode across a server restart. Loopback only, bounded in time and count.

    python -m benchmarks.bench_load              # 120 s of load, writes benchmarks/results/load.json
    python -m benchmarks.bench_load --quick      # 20 s of load, a shorter soak
    python -m benchmarks.bench_load --db postgresql+psycopg://postgres@127.0.0.1:5432/x

1. Load. A ``tuneloop`` server (a subprocess: uvicorn, API keys on, security middleware, a
   scripted gateway backend answering after ``--backend-ms``) gets an open-loop request
   schedule at ``--rate`` requests/s for ``--duration`` s from ``--workers`` asyncio workers,
   each with its own HTTP client: half chat completions through the gateway, 40 % ingestion
   batches of 10 interactions, 10 % feedback batches. Latency is measured from the moment a
   request was due (so a stalled server cannot hide its queue), p50/p99 per route.
   Meanwhile the tiny model trains with TRL LoRA (``tuneloop.train``, one thread), run after
   run. Afterwards the server is stopped (its writers flush) and every acknowledged
   interaction and feedback id is looked up: rows lost must be 0, errors must be 0.
2. Soak. A ``UsageLogger(endpoint=...)`` logs at a steady pace; a third of the way in, the
   server is stopped (SIGTERM) and started again ``--down`` s later on the same port. The
   SDK retries, spools and replays: rows sent must equal rows stored.

Exit status 1 when any error or lost row was seen.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

RESULTS = Path(__file__).parent / "results" / "load.json"
MAX_REQUESTS = 200_000  # a hard bound on one run, whatever the flags say


# ---------------------------------------------------------------- helpers
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    pos = (len(v) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return round(v[lo] + (v[hi] - v[lo]) * (pos - lo), 3)


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the server process
def serve(db_url: str, port: int, backend_ms: float) -> None:
    """Entry of the server subprocess (``--serve``)."""
    import uvicorn
    from fastapi.routing import iter_route_contexts

    from tuneloop.models.scripted import ScriptedBackend
    from tuneloop.privacy import api as privacy_api
    from tuneloop.server.app import create_app
    from tuneloop.server.security import install_security

    backend = ScriptedBackend(lambda messages: f"echo: {messages[-1]['content'][:40]}", delay_s=backend_ms / 1000)
    app = create_app(db_url, backends={"scripted": backend})
    if not any(r.path_format == "/v1/audit" for r in iter_route_contexts(app.routes)):
        app.include_router(privacy_api.router)
    install_security(app, app.state.settings)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=30)


class Server:
    """The server subprocess; ``stop()`` is a SIGTERM and a wait, so its writers flush."""

    def __init__(self, db_url: str, port: int, backend_ms: float) -> None:
        self.args = [sys.executable, "-m", "benchmarks.bench_load", "--serve", "--db", db_url, "--port", str(port),
                     "--backend-ms", str(backend_ms)]
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90) -> None:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(self.args, env=env, cwd=Path(__file__).parent.parent,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not come up")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# ---------------------------------------------------------------- background training
class Trainer(threading.Thread):
    """Tiny-model TRL LoRA runs, one after another, until stopped (each run in a subprocess)."""

    def __init__(self, db_url: str, work: Path, steps: int) -> None:
        super().__init__(daemon=True)
        self.db_url, self.work, self.steps = db_url, work, steps
        self.stop_flag = threading.Event()
        self.runs: list[dict[str, Any]] = []
        self.ready = threading.Event()

    def _data(self) -> Path:
        path = self.work / "sft.jsonl"
        rows = [{"messages": [{"role": "user", "content": f"{a}+{b}="}, {"role": "assistant", "content": str(a + b)}]}
                for a in range(10, 40) for b in range(10, 14)]
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        return path

    def run(self) -> None:
        from tuneloop.models.tiny import build_tiny_model
        from tuneloop.store import Database
        from tuneloop.train.runner import TrainingRunner
        from tuneloop.train.trl_config import TRLConfig
        from tuneloop.train.trl_trainer import TRLTrainer

        base = build_tiny_model(self.work / "tiny")
        data = self._data()
        db = Database.open(self.db_url)
        runner = TrainingRunner(db, show_progress=False, num_threads=1, timeout_s=600)
        self.ready.set()
        cfg = TRLConfig(max_steps=self.steps, batch_size=4, num_threads=1, device="cpu", logging_steps=5)
        while not self.stop_flag.is_set():
            t0 = time.time()
            try:
                out = runner.run(TRLTrainer(cfg), data, self.work / f"run{len(self.runs)}", str(base))
                self.runs.append({"ok": True, "seconds": round(time.time() - t0, 1), "steps": self.steps,
                                  "loss_last": out.metrics.get("train_loss_last")})
            except Exception as exc:  # recorded, not raised: the load goes on
                self.runs.append({"ok": False, "seconds": round(time.time() - t0, 1), "error": str(exc)[:300]})
        db.close()


# ---------------------------------------------------------------- the load
def _interactions(worker: int, i: int) -> list[dict[str, Any]]:
    return [{"id": f"L{worker:02d}-{i:07d}-{k}", "query": f"How do I reset my password? case {i}.{k}",
             "response": "Open Settings, then Security, then Reset. " * 4, "model": "app-model",
             "user_id": f"user-{(i + k) % 50}", "session_id": f"s-{i % 97}", "latency_ms": 120.0}
            for k in range(10)]


class Load:
    """The open-loop schedule, the request mix, and what was acknowledged."""

    def __init__(self, url: str, key: str, rate: float, duration: float, workers: int) -> None:
        self.url, self.key, self.rate, self.duration, self.workers = url, key, rate, duration, workers
        self.latency: dict[str, list[float]] = {"chat": [], "interactions": [], "feedback": []}
        self.service: dict[str, list[float]] = {"chat": [], "interactions": [], "feedback": []}
        self.errors: list[str] = []
        self.acked_interactions: list[str] = []
        self.acked_feedback: list[str] = []
        self.sent = 0

    async def _one(self, client: httpx.AsyncClient, worker: int, i: int, kind: str) -> bool:
        if kind == "chat":
            body: dict[str, Any] = {"model": "scripted", "user": f"user-{i % 50}",
                                    "messages": [{"role": "user", "content": f"Question number {i}?"}]}
            path = "/v1/chat/completions"
        elif kind == "interactions":
            body, path = {"interactions": _interactions(worker, i)}, "/v1/interactions"
        else:
            recent = self.acked_interactions[-50:] or ["missing"]
            body = {"feedback": [{"interaction_id": iid, "feedback_id": f"F{worker:02d}-{i:07d}-{k}", "kind": "thumbs",
                                  "value": 1} for k, iid in enumerate(recent[:5])]}
            path = "/v1/feedback"
        t0 = time.perf_counter()
        try:
            r = await client.post(path, json=body)
        except httpx.HTTPError as exc:
            self.errors.append(f"{kind}: {type(exc).__name__}: {exc}")
            return False
        self.service[kind].append((time.perf_counter() - t0) * 1000)
        if r.status_code != 200:
            self.errors.append(f"{kind}: HTTP {r.status_code}: {r.text[:200]}")
            return False
        data = r.json()
        if kind == "chat":
            self.acked_interactions.append(data["id"])
        elif kind == "interactions":
            self.acked_interactions.extend(data["ids"])
        else:
            self.acked_feedback.extend(f["feedback_id"] for f in body["feedback"])
        return True

    async def _worker(self, worker: int, start: float) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        limits = httpx.Limits(max_connections=4, max_keepalive_connections=4)
        async with httpx.AsyncClient(base_url=self.url, headers=headers, timeout=60, limits=limits) as client:
            pending: set[asyncio.Task] = set()
            n_total = min(int(self.rate * self.duration), MAX_REQUESTS)
            for i in range(worker, n_total, self.workers):
                due = start + i / self.rate
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                self.sent += 1
                task = asyncio.create_task(self._timed(client, worker, i, due))
                pending.add(task)
                task.add_done_callback(pending.discard)
            await asyncio.gather(*pending)

    async def _timed(self, client: httpx.AsyncClient, worker: int, i: int, due: float) -> None:
        kind = "chat" if i % 10 < 5 else "interactions" if i % 10 < 9 else "feedback"
        if await self._one(client, worker, i, kind):
            self.latency[kind].append((time.perf_counter() - due) * 1000)

    async def run(self) -> None:
        start = time.perf_counter() + 0.5

        async def progress():
            while True:
                await asyncio.sleep(10)
                _log(f"load: {self.sent} requests sent, {len(self.errors)} errors")

        ticker = asyncio.create_task(progress())
        await asyncio.gather(*(self._worker(w, start) for w in range(self.workers)))
        ticker.cancel()

    def summary(self) -> dict[str, Any]:
        routes = {k: {"requests": len(self.service[k]), "p50_ms": _pct(self.latency[k], 50),
                      "p99_ms": _pct(self.latency[k], 99), "service_p50_ms": _pct(self.service[k], 50),
                      "service_p99_ms": _pct(self.service[k], 99)} for k in self.service}
        return {"requests_sent": self.sent, "routes": routes, "errors": len(self.errors),
                "error_samples": self.errors[:5]}


def _count_present(db_url: str, table: str, ids: list[str]) -> int:
    import sqlalchemy as sa

    from tuneloop.store import Database, schema

    t = getattr(schema, table)
    db = Database.open(db_url)
    found = 0
    for start in range(0, len(ids), 500):
        found += int(db.scalar(sa.select(sa.func.count()).select_from(t).where(t.c.id.in_(ids[start:start + 500]))))
    db.close()
    return found


# ---------------------------------------------------------------- the soak
def soak(server: Server, db_url: str, key: str, seconds: float, down: float, work: Path) -> dict[str, Any]:
    from tuneloop.capture import UsageLogger

    logger = UsageLogger(endpoint=server.url, api_key=key, batch_size=200, flush_interval=0.1, max_attempts=2,
                         spool_path=work / "soak-spool.jsonl")
    sent: list[str] = []
    rate, t0, restarted = 200.0, time.time(), None
    n_total = int(rate * seconds)
    for i in range(n_total):
        due = t0 + i / rate
        time.sleep(max(0.0, due - time.time()))
        sent.append(logger.log(query=f"soak {i}", response="ok", model="soak", user_id=f"u{i % 20}"))
        if restarted is None and time.time() - t0 >= seconds / 3:
            _log(f"soak: stopping the server for {down:g} s")
            t_stop = time.time()
            server.stop()
            time.sleep(down)
            server_start = threading.Thread(target=server.start)  # keep logging while it boots
            server_start.start()
            restarted = {"down_at_s": round(t_stop - t0, 1)}
    if restarted is not None:
        server_start.join(120)
        restarted["up_again_after_s"] = round(time.time() - t0, 1)
    counters_before = logger.counters()
    logger.flush(timeout=120)
    deadline = time.time() + 120
    while logger.counters()["spool_pending"] and time.time() < deadline:
        logger.flush(timeout=10)
        time.sleep(0.5)
    logger.close(timeout=60)
    server.stop()  # its writer flushes: everything acknowledged is committed
    stored = _count_present(db_url, "interactions", sent)
    return {"seconds": seconds, "rows_sent": len(sent), "rows_stored": stored, "rows_lost": len(sent) - stored,
            "spooled": logger.spooled, "dropped": logger.dropped, "rejected": logger.rejected,
            "restart": restarted, "counters_at_end_of_logging": counters_before}


# ---------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="20 s of load and a 12 s soak")
    ap.add_argument("--duration", type=float, default=None, help="seconds of load (default 120, quick 20)")
    ap.add_argument("--rate", type=float, default=40.0, help="requests per second (open loop)")
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--backend-ms", type=float, default=5.0, help="scripted model answer time")
    ap.add_argument("--train-steps", type=int, default=40, help="optimizer steps per background training run")
    ap.add_argument("--soak", type=float, default=None, help="seconds of SDK soak (default 40, quick 12)")
    ap.add_argument("--down", type=float, default=3.0, help="seconds the server stays down in the soak")
    ap.add_argument("--db", default=None, help="database URL (default: a fresh SQLite file)")
    ap.add_argument("--no-train", action="store_true", help="no background training")
    ap.add_argument("--output", type=Path, default=RESULTS)
    ap.add_argument("--keep", action="store_true", help="keep the work folder (database, runs, spool)")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.serve:
        serve(a.db, a.port, a.backend_ms)
        return 0
    duration = a.duration or (20.0 if a.quick else 120.0)
    soak_s = a.soak or (12.0 if a.quick else 40.0)
    work = Path(tempfile.mkdtemp(prefix="tuneloop-load-"))
    db_url = a.db or f"sqlite:///{work / 'load.db'}"
    try:
        return run(a, duration, soak_s, work, db_url)
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)


def run(a: argparse.Namespace, duration: float, soak_s: float, work: Path, db_url: str) -> int:
    from tuneloop.server.keys import create_key
    from tuneloop.store import Database

    db = Database.open(db_url)
    key = create_key(db, "ingest", name="load").secret
    db.close()
    server = Server(db_url, _free_port(), a.backend_ms)
    trainer = Trainer(db_url, work, a.train_steps)
    if not a.no_train:
        trainer.start()
        trainer.ready.wait(300)
    _log(f"load: {duration:g} s at {a.rate:g} req/s, training in the background: {not a.no_train}")
    server.start()
    load = Load(server.url, key, a.rate, duration, a.workers)
    t0 = time.time()
    asyncio.run(load.run())
    wall = time.time() - t0
    server.stop()
    trainer.stop_flag.set()
    acked_i, acked_f = sorted(set(load.acked_interactions)), sorted(set(load.acked_feedback))
    stored_i = _count_present(db_url, "interactions", acked_i)
    stored_f = _count_present(db_url, "feedback", acked_f)
    _log(f"load done: {load.sent} requests, {len(load.errors)} errors, {len(acked_i) - stored_i} interactions lost")
    _log(f"soak: {soak_s:g} s of SDK logging across a server restart")
    server.start()
    soak_result = soak(server, db_url, key, soak_s, a.down, work)
    if trainer.is_alive():
        trainer.join(600)
    result = {
        "benchmark": "load", "quick": a.quick, "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                                         "platform": platform.platform()},
        "database": db_url.split("://")[0], "duration_s": duration, "wall_s": round(wall, 1), "rate_rps": a.rate,
        "workers": a.workers, "backend_ms": a.backend_ms, **load.summary(),
        "interactions_acked": len(acked_i), "interactions_stored": stored_i, "interactions_lost": len(acked_i) - stored_i,
        "feedback_acked": len(acked_f), "feedback_stored": stored_f, "feedback_lost": len(acked_f) - stored_f,
        "training": {"runs": len(trainer.runs), "succeeded": sum(r["ok"] for r in trainer.runs),
                     "steps_per_run": a.train_steps, "details": trainer.runs} if not a.no_train else None,
        "soak": soak_result,
    }
    result["rows_lost"] = result["interactions_lost"] + result["feedback_lost"] + soak_result["rows_lost"]
    result["ok"] = result["errors"] == 0 and result["rows_lost"] == 0
    a.output.parent.mkdir(parents=True, exist_ok=True)
    a.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("routes", "errors", "rows_lost", "ok")}, indent=2))
    print(json.dumps({"soak": {k: soak_result[k] for k in ("rows_sent", "rows_stored", "rows_lost", "spooled")},
                      "training": result["training"] and {k: result["training"][k] for k in ("runs", "succeeded")}},
                     indent=2))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
