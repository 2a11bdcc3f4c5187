"""HTTP benchmarks: ingestion throughput and gateway overhead, on loopback.

    python -m benchmarks.bench_http            # writes benchmarks/results/http.json
    python -m benchmarks.bench_http --quick    # a few seconds, for a smoke run

1. Ingestion: ``tuneloop serve`` (a subprocess, auth on) and several client processes,
   each with its own httpx client (a shared pool degrades under load), posting batches of
   100 ~1 KB interactions for a fixed time. Reports interactions/s and request latency
   p50/p99, then checks the database holds exactly the rows sent. SQLite always,
   PostgreSQL too when the server at $TUNELOOP_TEST_PG answers (a scratch database).
2. Gateway overhead: a minimal HTTP server that answers an OpenAI chat completion at once
   (the upstream); the same requests sent to it directly and through the gateway (a
   subprocess with an OpenAI-compatible backend pointing at it). Added latency = gateway
   percentile - direct percentile, one sequential client; requests/s with concurrent clients.

Targets (issue 3 and 4): >= 10,000 interactions/s over HTTP; gateway added p50 <= 1 ms, p99 <= 5 ms.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

RESULTS = Path(__file__).parent / "results" / "http.json"
PG_ADMIN = os.environ.get("TUNELOOP_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


# ---------------------------------------------------------------- helpers
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    pos = (len(v) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up in {timeout} s")


def _spawn(args: list[str], health_url: str) -> subprocess.Popen:
    env = {**os.environ, "TUNELOOP_LOG_LEVEL": "warning", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_healthy(health_url, proc)
    except Exception:
        proc.kill()
        raise RuntimeError(proc.stderr.read().decode()[-2000:] if proc.stderr else "server failed")
    return proc


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its children (Linux /proc)."""
    def own(p: int) -> tuple[int, float]:
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    total = 0.0
    try:
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    ppid, cpu = own(int(entry.name))
                except (OSError, IndexError, ValueError):
                    continue
                if int(entry.name) == pid or ppid == pid:
                    total += cpu
    except OSError:
        return float("nan")
    return total


def _run_clients(target, args_for, n_clients: int, duration: float) -> tuple[list[tuple], float]:
    """Start ``n_clients`` processes at one instant; return their results and the wall time."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    start_at = time.time() + 2.0  # time for every process to start and warm up
    procs = [ctx.Process(target=target, args=(*args_for(i), start_at, duration, q)) for i in range(n_clients)]
    for p in procs:
        p.start()
    results = [q.get(timeout=duration + 120) for _ in procs]
    for p in procs:
        p.join(30)
    wall = max(r[-1] for r in results) - start_at
    return results, wall


# ---------------------------------------------------------------- 1. ingestion
def _row_template(proc: int, i: int) -> dict[str, Any]:
    # ~1 KB once serialized: a realistic question, a paragraph of answer, the chat list.
    query = f"How do I configure the retry policy for service {i}? " + "Details about my setup. " * 6
    return {"id": f"b{proc:02d}-@@N@@-{i:03d}", "query": query, "response": "You can set it like this. " * 20,
            "model": "bench-model", "latency_ms": 100.0 + i, "user_id": f"user-{i % 17}", "session_id": "s1",
            "messages": [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": query}],
            "metadata": {"app": "bench", "route": "/chat"}}


def _ingest_client(url: str, key: str, proc: int, batch: int, start_at: float, duration: float, q) -> None:
    template = json.dumps({"interactions": [_row_template(proc, i) for i in range(batch)]}).encode()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    latencies, sent, n = [], 0, 0
    with httpx.Client(headers=headers, timeout=60) as client:
        client.get(url.replace("/v1/interactions", "/healthz"))  # open the connection before the clock
        while time.time() < start_at:
            time.sleep(0.001)
        end = start_at + duration
        while time.time() < end:
            body = template.replace(b"@@N@@", b"%08d" % n)
            t0 = time.perf_counter()
            r = client.post(url, content=body)
            latencies.append((time.perf_counter() - t0) * 1000)
            if r.status_code != 200:
                raise RuntimeError(f"ingestion answered {r.status_code}: {r.text[:300]}")
            sent += batch
            n += 1
    q.put((sent, latencies, time.time()))


def _pg_scratch() -> tuple[str, Any] | None:
    try:
        import sqlalchemy as sa

        admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        name = f"tuneloop_bench_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except Exception as exc:  # no server: SQLite only
        print(f"  (PostgreSQL skipped: {type(exc).__name__})")
        return None

    def drop() -> None:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()

    return PG_ADMIN.rsplit("/", 1)[0] + "/" + name, drop


def bench_ingestion(db_url: str, *, clients: int, batch: int, duration: float, workers: int = 1) -> dict[str, Any]:
    import sqlalchemy as sa

    from tuneloop.server.keys import create_key
    from tuneloop.store import Database, schema

    db = Database.open(db_url)
    key = create_key(db, "ingest", name="bench").secret
    port = _free_port()
    server = _spawn(["-m", "tuneloop.cli", "--db", db_url, "serve", "--port", str(port), "--workers", str(workers)],
                    f"http://127.0.0.1:{port}/healthz")
    url = f"http://127.0.0.1:{port}/v1/interactions"
    try:
        cpu0 = _cpu_seconds(server.pid)
        results, wall = _run_clients(_ingest_client, lambda i: (url, key, i, batch), clients, duration)
        server_cpu = _cpu_seconds(server.pid) - cpu0
    finally:
        _stop(server)
    sent = sum(r[0] for r in results)
    latencies = [x for r in results for x in r[1]]
    stored = db.scalar(sa.select(sa.func.count()).select_from(schema.interactions))
    db.close()
    out = {"server_workers": workers, "clients": clients, "batch": batch, "seconds": round(wall, 2), "interactions": sent,
           "stored": stored, "interactions_per_s": round(sent / wall), "requests": len(latencies),
           "request_ms_p50": round(_pct(latencies, 50), 2), "request_ms_p99": round(_pct(latencies, 99), 2),
           # server CPU per batch (incl. the 2 s warm-up): what one core could do at most
           "server_cpu_ms_per_request": round(server_cpu * 1000 / max(len(latencies), 1), 2),
           "load_average_1m": os.getloadavg()[0], "target_per_s": 10_000, "met": sent / wall >= 10_000}
    if stored != sent:
        out["error"] = f"stored {stored} rows, sent {sent}"
    return out


# ---------------------------------------------------------------- 2. gateway overhead
_COMPLETION = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "upstream",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris is the capital of France."},
                 "finish_reason": "stop", "logprobs": None}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}}).encode()
_RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
             b"Connection: keep-alive\r\n\r\n" % len(_COMPLETION)) + _COMPLETION
_CL = re.compile(rb"content-length:\s*(\d+)", re.I)


def serve_upstream(port: int) -> None:
    """A minimal HTTP/1.1 keep-alive server answering every request with one chat completion at once."""
    import asyncio

    class Upstream(asyncio.Protocol):
        def connection_made(self, transport):  # noqa: ANN001
            self.transport, self.buf = transport, b""

        def data_received(self, data: bytes) -> None:
            self.buf += data
            while (end := self.buf.find(b"\r\n\r\n")) >= 0:
                m = _CL.search(self.buf, 0, end)
                total = end + 4 + (int(m.group(1)) if m else 0)
                if len(self.buf) < total:
                    return
                self.buf = self.buf[total:]
                self.transport.write(_RESPONSE)

    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(loop.create_server(Upstream, "127.0.0.1", port, backlog=1024))
    loop.run_until_complete(server.serve_forever())


def _make_backend(base_url: str) -> tuple[Any, str]:
    """The models package's OpenAI-compatible backend: what production puts behind the gateway."""
    from tuneloop.models.openai_backend import OpenAIBackend

    return OpenAIBackend(base_url, model="upstream", retries=0), "tuneloop.models.openai_backend.OpenAIBackend"


def serve_gateway(port: int, upstream: str, db_url: str) -> None:
    import uvicorn

    from tuneloop.server.app import create_app

    if upstream == "scripted":  # no upstream at all: the gateway's own cost
        from tuneloop.models.scripted import ScriptedBackend

        backend: Any = ScriptedBackend(lambda messages: "Paris is the capital of France.")
    else:
        backend, _ = _make_backend(upstream)
    app = create_app(db_url, backends={"bench": backend})
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


_CHAT = json.dumps({"model": "bench", "messages": [{"role": "user", "content": "What is the capital of France?"}],
                    "user": "bench-user"}).encode()


def _interleaved(direct_url: str, gateway_url: str, key: str, n: int) -> tuple[list[float], list[float]]:
    """Latency of ``n`` sequential requests to each URL, alternating, so both see the same load."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    direct, through = [], []
    with httpx.Client(headers=headers, timeout=30) as a, httpx.Client(headers=headers, timeout=30) as b:
        for i in range(n + 100):
            for client, url, out in ((a, direct_url, direct), (b, gateway_url, through)):
                t0 = time.perf_counter()
                r = client.post(url, content=_CHAT)
                dt = (time.perf_counter() - t0) * 1000
                if r.status_code != 200:
                    raise RuntimeError(f"{url} answered {r.status_code}: {r.text[:300]}")
                if i >= 100:  # the first requests warm connections and caches
                    out.append(dt)
    return direct, through


def _load_client(url: str, key: str, _i: int, start_at: float, duration: float, q) -> None:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    n = 0
    with httpx.Client(headers=headers, timeout=30) as client:
        client.post(url, content=_CHAT)
        while time.time() < start_at:
            time.sleep(0.001)
        end = start_at + duration
        while time.time() < end:
            if client.post(url, content=_CHAT).status_code != 200:
                raise RuntimeError("request failed under load")
            n += 1
    q.put((n, time.time()))


def bench_gateway(*, requests: int, clients: int, duration: float) -> dict[str, Any]:
    from tuneloop.server.keys import create_key
    from tuneloop.store import Database

    tmp = tempfile.mkdtemp(prefix="tuneloop-bench-")
    db_url = f"sqlite:///{tmp}/gateway.db"
    db = Database.open(db_url)
    key = create_key(db, "ingest").secret
    db.close()
    up_port, gw_port, own_port = _free_port(), _free_port(), _free_port()
    upstream = f"http://127.0.0.1:{up_port}"
    up = _spawn(["-m", "benchmarks.bench_http", "--serve-upstream", str(up_port)], upstream + "/healthz")
    gw = _spawn(["-m", "benchmarks.bench_http", "--serve-gateway", str(gw_port), upstream, db_url],
                f"http://127.0.0.1:{gw_port}/healthz")
    own = _spawn(["-m", "benchmarks.bench_http", "--serve-gateway", str(own_port), "scripted", db_url],
                 f"http://127.0.0.1:{own_port}/healthz")
    direct_url, gateway_url = upstream + "/chat/completions", f"http://127.0.0.1:{gw_port}/v1/chat/completions"
    own_url = f"http://127.0.0.1:{own_port}/v1/chat/completions"
    try:
        cpu0 = _cpu_seconds(gw.pid)
        direct, through = _interleaved(direct_url, gateway_url, key, requests)
        cpu_per_request = (_cpu_seconds(gw.pid) - cpu0) * 1000 / (requests + 100)
        direct2, scripted = _interleaved(direct_url, own_url, key, requests)
        res_direct, wall_d = _run_clients(_load_client, lambda i: (direct_url, key, i), clients, duration)
        res_gw, wall_g = _run_clients(_load_client, lambda i: (gateway_url, key, i), clients, duration)
    finally:
        for proc in (own, gw, up):
            _stop(proc)
    _, backend_name = _make_backend(upstream)
    d50, d99, g50, g99 = _pct(direct, 50), _pct(direct, 99), _pct(through, 50), _pct(through, 99)
    return {
        "upstream": "asyncio HTTP/1.1 server answering a fixed chat completion at once", "backend": backend_name,
        "sequential_requests": requests,
        "direct_ms": {"p50": round(d50, 3), "p99": round(d99, 3), "mean": round(statistics.fmean(direct), 3)},
        "gateway_ms": {"p50": round(g50, 3), "p99": round(g99, 3), "mean": round(statistics.fmean(through), 3)},
        "added_ms": {"p50": round(g50 - d50, 3), "p99": round(g99 - d99, 3)},
        # the same, with an in-process scripted backend instead of the upstream HTTP client:
        # what the gateway itself adds (server, auth, routing, thread hop, capture)
        "added_ms_without_upstream_client": {"p50": round(_pct(scripted, 50) - _pct(direct2, 50), 3),
                                             "p99": round(_pct(scripted, 99) - _pct(direct2, 99), 3)},
        # gateway process CPU (incl. its upstream client and the capture writer) per request
        "gateway_cpu_ms_per_request": round(cpu_per_request, 3), "load_average_1m": os.getloadavg()[0],
        "load_clients": clients,
        "direct_requests_per_s": round(sum(r[0] for r in res_direct) / wall_d),
        "gateway_requests_per_s": round(sum(r[0] for r in res_gw) / wall_g),
        "target_added_ms": {"p50": 1.0, "p99": 5.0},
        "met": g50 - d50 <= 1.0 and g99 - d99 <= 5.0,
    }


# ---------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="short runs (smoke test)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per throughput run")
    p.add_argument("--clients", type=int, default=4, help="client processes for throughput runs")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--requests", type=int, default=2000, help="sequential requests for the latency runs")
    p.add_argument("--no-postgres", action="store_true")
    p.add_argument("--only", choices=["ingestion", "gateway"])
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--serve-upstream", type=int, help=argparse.SUPPRESS)
    p.add_argument("--serve-gateway", nargs=3, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.serve_upstream:
        serve_upstream(a.serve_upstream)
        return {}
    if a.serve_gateway:
        serve_gateway(int(a.serve_gateway[0]), a.serve_gateway[1], a.serve_gateway[2])
        return {}
    if a.quick:
        a.duration, a.requests = 3.0, 300
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                           "platform": platform.platform()},
                               "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "quick": a.quick}
    if a.only in (None, "ingestion"):
        tmp = tempfile.mkdtemp(prefix="tuneloop-bench-")
        print("HTTP ingestion into SQLite ...")
        results["ingestion_sqlite"] = bench_ingestion(f"sqlite:///{tmp}/ingest.db", clients=a.clients,
                                                      batch=a.batch, duration=a.duration)
        print("  ", results["ingestion_sqlite"])
        pg = None if a.no_postgres else _pg_scratch()
        if pg is not None:
            url, drop = pg
            print("HTTP ingestion into PostgreSQL ...")
            try:
                results["ingestion_postgres"] = bench_ingestion(url, clients=a.clients, batch=a.batch,
                                                                duration=a.duration)
            finally:
                drop()
            print("  ", results["ingestion_postgres"])
    if a.only in (None, "gateway"):
        print("Gateway overhead ...")
        results["gateway"] = bench_gateway(requests=a.requests, clients=a.clients, duration=a.duration)
        print("  ", results["gateway"])
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results in {a.out}")
    return results


if __name__ == "__main__":
    main()
