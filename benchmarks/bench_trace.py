"""Tracing overhead: the latency ``@trace`` and ``wrap_openai`` add to a call.

    python -m benchmarks.bench_trace            # 200,000 pairs per @trace case, 20,000 per OpenAI case
    python -m benchmarks.bench_trace --quick    # 50,000 / 5,000

Writes benchmarks/results/trace.json.

Every case times *pairs*: the bare call and the traced call right after each other (their
order alternating pair by pair), so both see the same machine at the same moment. This
2-core machine is shared (load average 5-8 while other jobs run): the OS takes the CPU
away from the benchmark every few milliseconds, and a call that spans such a preemption
takes milliseconds, whatever it does. So the benchmark reads this thread's count of
involuntary context switches (``getrusage(RUSAGE_THREAD).ru_nivcsw``) around each pair:

- ``undisturbed``: the pairs during which the OS did not preempt the thread. Their
  ``added_us`` (traced percentile - bare percentile: p50, p90, p99) is what tracing itself
  adds, GIL hand-offs to the logger's writer thread, garbage collection and cold caches
  included; ``added_us.p99`` is held against the target. ``undisturbed_share`` says how
  many pairs that is (short calls: nearly all; a 2 ms stream: few).
- ``all``: every pair, preempted ones included (on a quiet machine, the same numbers).
- ``paired_diff_us``: percentiles of the per-pair difference (traced - bare); its tails
  carry the noise of both calls, so it is shown, not judged.
- ``first_after_sleep`` (paced cases): the first pair of each burst, run right after a
  sleep with caches other processes have used meanwhile.

Spans go to a real ``UsageLogger`` on a SQLite file, its writer thread committing at the
same time (the GIL is shared with it, as in an application). Calls are paced (``--rate``
traced calls/s, in bursts of 1,000 pairs) so the writer keeps up; ``on_full="drop"`` counts
anything it could not take.

Cases: ``trace_function`` (``@trace`` on ``def add(a, b): return a + b``), ``trace_async``
(an ``async def``, awaited in one running loop), ``trace_block`` (``with trace("step") as
span: span.set_output(...)``); ``wrap_openai`` (the official client's
``chat.completions.create``, sync), ``wrap_openai_stream`` (20 chunks read to the end) and
``wrap_openai_async``: bare and wrapped clients share one in-process ``MockTransport``
answering a canned completion, so the network is out of the measurement and what is left
is the SDK's own work plus ours.

Target (issue 11): ``@trace`` and ``wrap_openai`` add <= 50 us p99 to a call.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "trace.json"
TARGETS = {"added_p99_us": 50.0}
BURST = 1000

COMPLETION = {
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000, "model": "bench-model",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "Refunds are processed within five business days."}}],
    "usage": {"prompt_tokens": 24, "completion_tokens": 9, "total_tokens": 33},
}
MESSAGES = [{"role": "system", "content": "You are a support assistant. Answer briefly."},
            {"role": "user", "content": "How long does a refund take?"}]


def _pct(sorted_values: list[float], q: float) -> float:
    pos = (len(sorted_values) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _percentiles(ns: list[int]) -> dict[str, float]:
    us = sorted(v / 1000 for v in ns)
    return {"p50": round(_pct(us, 50), 2), "p90": round(_pct(us, 90), 2), "p99": round(_pct(us, 99), 2),
            "p999": round(_pct(us, 99.9), 2), "max": round(us[-1], 1), "mean": round(sum(us) / len(us), 2)}


def _shift(bare: list[int], traced: list[int]) -> dict[str, Any]:
    b, t = _percentiles(bare), _percentiles(traced)
    return {"bare_us": b, "traced_us": t, "added_us": {q: round(t[q] - b[q], 2) for q in ("p50", "p90", "p99")},
            "paired_diff_us": _percentiles([y - x for x, y in zip(bare, traced)])}


def _summary(run: "Run", extra: dict[str, Any], paced: bool = True) -> dict[str, Any]:
    keep = [i for i, d in enumerate(run.disturbed) if not d]
    out = {**extra, "undisturbed_share": round(len(keep) / len(run.bare), 4),
           "undisturbed": _shift([run.bare[i] for i in keep], [run.traced[i] for i in keep]),
           "all": _shift(run.bare, run.traced)}
    if paced and len(run.bare) >= 20 * BURST:
        # The first pair of each burst runs right after a sleep, with caches other processes
        # have used meanwhile: its own numbers, so that they are seen rather than averaged away.
        cold = range(0, len(run.bare), BURST)
        out["first_after_sleep"] = _shift([run.bare[i] for i in cold], [run.traced[i] for i in cold])
    return out


def _report(name: str, r: dict[str, Any]) -> None:
    u, a = r["undisturbed"], r["all"]
    print(f"  {name}: bare p50 {u['bare_us']['p50']} us; added p50 {u['added_us']['p50']} us, "
          f"p99 {u['added_us']['p99']} us ({r['undisturbed_share']:.1%} of pairs undisturbed); "
          f"all pairs: added p50 {a['added_us']['p50']} us, p99 {a['added_us']['p99']} us", flush=True)


def _preemptions() -> Callable[[], int]:
    """This thread's count of involuntary context switches (the OS gave the CPU to another
    process): a pair during which it moves was disturbed by the machine, not by tracing."""
    try:
        import resource

        who = resource.RUSAGE_THREAD
        resource.getrusage(who)
        return lambda: resource.getrusage(who).ru_nivcsw
    except (ImportError, AttributeError, OSError):
        return lambda: 0


class Run:
    """Latencies (ns) of ``n`` timed pairs, and which pairs the OS preempted."""

    def __init__(self, n: int) -> None:
        self.bare, self.traced, self.disturbed = [0] * n, [0] * n, bytearray(n)


class _Pacer:
    """Sleeps after every burst of pairs so that traced calls run at ``rate`` per second."""

    def __init__(self, rate: float) -> None:
        self.step = BURST / rate if rate else 0.0
        self.next_t = time.perf_counter()

    def after(self, i: int) -> float:
        if i % BURST != BURST - 1 or not self.step:
            return 0.0
        self.next_t += self.step
        return max(0.0, self.next_t - time.perf_counter())


def pairs(bare: Callable[[], Any], traced: Callable[[], Any], n: int, rate: float) -> Run:
    """Time ``n`` (bare, traced) pairs, alternating which goes first."""
    clock, switches = time.perf_counter_ns, _preemptions()
    run, pacer = Run(n), _Pacer(rate)
    lb, lt = run.bare, run.traced
    for i in range(n):
        before = switches()
        if i & 1:
            t0 = clock(); bare(); t1 = clock(); traced(); t2 = clock()  # noqa: E702
            lb[i], lt[i] = t1 - t0, t2 - t1
        else:
            t0 = clock(); traced(); t1 = clock(); bare(); t2 = clock()  # noqa: E702
            lt[i], lb[i] = t1 - t0, t2 - t1
        run.disturbed[i] = switches() != before
        delay = pacer.after(i)
        if delay:
            time.sleep(delay)
    return run


async def apairs(bare: Callable[[], Any], traced: Callable[[], Any], n: int, rate: float) -> Run:
    clock, switches = time.perf_counter_ns, _preemptions()
    run, pacer = Run(n), _Pacer(rate)
    lb, lt = run.bare, run.traced
    for i in range(n):
        before = switches()
        if i & 1:
            t0 = clock(); await bare(); t1 = clock(); await traced(); t2 = clock()  # noqa: E702
            lb[i], lt[i] = t1 - t0, t2 - t1
        else:
            t0 = clock(); await traced(); t1 = clock(); await bare(); t2 = clock()  # noqa: E702
            lt[i], lb[i] = t1 - t0, t2 - t1
        run.disturbed[i] = switches() != before
        delay = pacer.after(i)
        if delay:
            await asyncio.sleep(delay)
    return run


# ---------------------------------------------------------------- @trace
def _case(name: str, logger: Any, timed: Callable[[], Run], n: int, paced: bool = True) -> dict[str, Any]:
    """Run one case (``timed`` returns its :class:`Run`) with the logger drained first."""
    assert logger.flush(600)
    gc.collect()
    dropped, t0 = logger.dropped, time.perf_counter()
    run = timed()
    out = _summary(run, {"pairs": n, "achieved_rate": round(n / (time.perf_counter() - t0)),
                         "dropped": logger.dropped - dropped}, paced)
    _report(name, out)
    return out


def bench_trace(n: int, rate: float, logger: Any) -> dict[str, Any]:
    import tuneloop

    def add(a, b):
        return a + b

    async def aadd(a, b):
        return a + b

    traced_add = tuneloop.trace(add)
    traced_aadd = tuneloop.trace(aadd)

    def block():
        with tuneloop.trace("step") as span:
            span.set_output(3)
        return 3

    def warm(traced):
        for _ in range(2000):  # code paths, the id generator, the queue
            traced()

    async def arun():
        for _ in range(2000):
            await traced_aadd(1, 2)
        return await apairs(lambda: aadd(1, 2), lambda: traced_aadd(1, 2), n, rate)

    out = {}
    for name, bare, traced in (("trace_function", lambda: add(1, 2), lambda: traced_add(1, 2)),
                               ("trace_block", lambda: add(1, 2), block)):
        warm(traced)
        out[name] = _case(name, logger, lambda: pairs(bare, traced, n, rate), n)
    out["trace_async"] = _case("trace_async", logger, lambda: asyncio.run(arun()), n)
    return out


# ---------------------------------------------------------------- wrap_openai
def _transport(sync: bool) -> Any:
    import httpx2  # what this openai release speaks (httpx before it)

    body = json.dumps(COMPLETION).encode()
    chunks = [{"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000,
               "model": "bench-model", "choices": [{"index": 0, "delta": {"content": f"word{i} "},
                                                    "finish_reason": None}]} for i in range(20)]
    chunks[-1]["choices"][0]["finish_reason"] = "stop"
    sse = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks).encode() + b"data: [DONE]\n\n"

    def handler(request: Any) -> Any:
        if b'"stream":true' in request.content or b'"stream": true' in request.content:
            return httpx2.Response(200, content=sse, headers={"content-type": "text/event-stream"})
        return httpx2.Response(200, content=body, headers={"content-type": "application/json"})

    async def ahandler(request: Any) -> Any:
        return handler(request)

    return httpx2.MockTransport(handler if sync else ahandler)


def _clients(sync: bool, logger: Any) -> tuple[Any, Any]:
    import httpx2
    import openai

    import tuneloop

    def make():
        if sync:
            return openai.OpenAI(base_url="http://mock.local/v1", api_key="sk-bench", max_retries=0,
                                 http_client=httpx2.Client(transport=_transport(True)))
        return openai.AsyncOpenAI(base_url="http://mock.local/v1", api_key="sk-bench", max_retries=0,
                                  http_client=httpx2.AsyncClient(transport=_transport(False)))

    return make(), tuneloop.wrap_openai(make(), logger=logger)


def bench_openai(n: int, rate: float, logger: Any) -> dict[str, Any]:
    bare_c, wrapped_c = _clients(True, logger)
    abare, awrapped = _clients(False, logger)
    kw = {"model": "bench-model", "messages": MESSAGES, "temperature": 0.2}

    def consume(client):
        for _ in client.chat.completions.create(stream=True, **kw):
            pass

    async def arun():
        for _ in range(300):
            await abare.chat.completions.create(**kw), await awrapped.chat.completions.create(**kw)
        return await apairs(lambda: abare.chat.completions.create(**kw),
                            lambda: awrapped.chat.completions.create(**kw), n, rate)

    out = {}
    cases = (("wrap_openai", lambda: bare_c.chat.completions.create(**kw),
              lambda: wrapped_c.chat.completions.create(**kw)),
             ("wrap_openai_stream", lambda: consume(bare_c), lambda: consume(wrapped_c)))
    for name, bare, traced in cases:
        for _ in range(300):
            bare(), traced()
        out[name] = _case(name, logger, lambda: pairs(bare, traced, n, rate), n, paced=False)
    out["wrap_openai_async"] = _case("wrap_openai_async", logger, lambda: asyncio.run(arun()), n, paced=False)
    out.update(bench_openai_own(n * 5, rate, logger))
    return out


def bench_openai_own(n: int, rate: float, logger: Any) -> dict[str, Any]:
    """What the wrapper itself adds, without the client's own ~600 us of noise around it.

    ``create`` is replaced by a function that returns a ready ``ChatCompletion`` at once, and the
    same wrapper ``wrap_openai`` installs (``_wrap_create``) goes around it: the difference is
    the wrapper's own work on the caller's thread -- recording the request, the span, attaching
    the interaction id, queueing the row -- measured with nothing else in the pair to jitter.
    """
    from openai.types.chat import ChatCompletion

    from tuneloop.capture.openai_wrap import _wrap_create

    ready = ChatCompletion.model_validate(COMPLETION)
    kw = {"model": "bench-model", "messages": MESSAGES, "temperature": 0.2}

    def create(**_: Any) -> Any:
        return ready

    async def acreate(**_: Any) -> Any:
        return ready

    wrapped, awrapped = _wrap_create(create, logger), _wrap_create(acreate, logger)

    async def arun():
        for _ in range(1000):
            await acreate(**kw), await awrapped(**kw)
        return await apairs(lambda: acreate(**kw), lambda: awrapped(**kw), n, rate)

    for _ in range(1000):
        create(**kw), wrapped(**kw)
    return {"wrap_openai_own": _case("wrap_openai_own", logger, lambda: pairs(lambda: create(**kw), lambda: wrapped(**kw), n, rate), n),
            "wrap_openai_own_async": _case("wrap_openai_own_async", logger, lambda: asyncio.run(arun()), n)}


# ---------------------------------------------------------------- main
def _machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
            "platform": platform.platform(), "load_avg_at_start": [round(x, 2) for x in os.getloadavg()]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=200_000, help="timed pairs per @trace case")
    p.add_argument("--openai-pairs", type=int, default=20_000, help="timed pairs per wrap_openai case")
    p.add_argument("--rate", type=float, default=5_000, help="traced calls/s (paced in bursts of 1,000 pairs)")
    p.add_argument("--quick", action="store_true", help="50,000 / 5,000 pairs")
    p.add_argument("--output", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    n, n_openai = (50_000, 5_000) if args.quick else (args.pairs, args.openai_pairs)

    import tuneloop
    from tuneloop.capture import UsageLogger

    tmp = Path(tempfile.mkdtemp(prefix="tuneloop-bench-trace-"))
    logger = UsageLogger(db_path=tmp / "trace.db", spool_path=tmp / "spool.jsonl", on_full="drop")
    tuneloop.configure_tracing(logger=logger)
    result: dict[str, Any] = {"machine": _machine(), "targets": TARGETS, "rate": args.rate}
    print("@trace:", flush=True)
    result.update(bench_trace(n, args.rate, logger))
    print("wrap_openai:", flush=True)
    result.update(bench_openai(n_openai, min(args.rate, 1000.0), logger))
    assert logger.flush(600)
    result["rows_logged"] = logger.get_statistics()["delivered"]
    logger.close()
    result["machine"]["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    cases = [k for k, v in result.items() if isinstance(v, dict) and "undisturbed" in v]
    # Held against the target: @trace, and the wrapper's own work (wrap_openai_own*). The
    # end-to-end wrap_openai* pairs through the real client are reported too, but their p99 is
    # the spread of two separate ~600 us client calls, not something the wrapper adds.
    result["met"] = {k: result[k]["undisturbed"]["added_us"]["p99"] <= TARGETS["added_p99_us"] for k in cases
                     if k.startswith("trace_") or k.startswith("wrap_openai_own")}
    result["end_to_end_reported_not_held"] = [k for k in cases if k.startswith("wrap_openai") and "own" not in k]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"load average {result['machine']['load_avg_at_start']} -> {result['machine']['load_avg_at_end']}; "
          f"target added p99 <= {TARGETS['added_p99_us']} us: "
          f"{'met' if all(result['met'].values()) else 'NOT met: ' + str(result['met'])}; written to {args.output}")
    return result


if __name__ == "__main__":
    sys.exit(0 if all(main()["met"].values()) else 1)
