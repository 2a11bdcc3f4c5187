"""Benchmark: LoRA training on SmolLM2-135M-Instruct (CPU), through tuneloop and through plain TRL.

    python -m benchmarks.bench_train                  # writes benchmarks/results/train.json
    python -m benchmarks.bench_train --quick          # fewer steps, one repeat
    python -m benchmarks.bench_train --only throughput   # tokens/s only (keeps the demos' last results)
    python -m benchmarks.bench_train --only demos        # the demonstrations only
    python -m benchmarks.bench_train --only one-word     # the one-word demonstration only

1. **Throughput**: SFT and DPO (``["sigmoid", "sft"]``) tokens/s through
   :class:`tuneloop.train.trl_trainer.TRLTrainer` vs a plain TRL script with identical settings
   (same model, data, LoRA, batch, steps, fp32 on CPU). tokens/s = TRL's ``num_tokens`` / the
   Trainer's ``train_runtime`` for both; runs alternate (tuneloop, plain, plain, tuneloop, ...)
   so a noisy neighbour on the shared CPU hits both sides alike. Overhead target: < 5%.
2. **The one-word demonstration** (issue 6 item 5): the base model answers "What is the capital
   of X? Answer with one word." with a sentence, so it fails the golden ``capitals`` suite.
   SFT rows and DPO pairs are built from its own answers (greedy + sampled, kept where the
   content is right) on *other* countries (no golden leak), a LoRA challenger is trained through
   the subprocess runner for a few minutes, and both are evaluated on the golden suite; the gate
   (threshold = 0.8 x the base model's knowledge ceiling, McNemar against the champion) decides.
   Measured: the challenger beats the champion (0% -> 40%, p < 0.001) but stays below that bar:
   trained to say the bare city, the 135M model loses facts it only retrieves inside a sentence.
3. **Retriever**: all-MiniLM-L6-v2 fine-tuned on (query, positive, hard negative) triplets with
   in-batch negatives; MRR on held-out queries (products never seen in training) before/after.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

RESULTS = Path(__file__).resolve().parent / "results" / "train.json"
QUESTION = "What is the capital of {}? Answer with one word."
# One-word capitals, none of them in the golden ``capitals`` suite (tuneloop.evaluate.suites).
TRAIN_CAPITALS = (
    ("Netherlands", "Amsterdam"), ("Switzerland", "Bern"), ("Czechia", "Prague"), ("Romania", "Bucharest"),
    ("Bulgaria", "Sofia"), ("Serbia", "Belgrade"), ("Croatia", "Zagreb"), ("Ukraine", "Kyiv"),
    ("Iceland", "Reykjavik"), ("Estonia", "Tallinn"), ("Latvia", "Riga"), ("Lithuania", "Vilnius"),
    ("Slovakia", "Bratislava"), ("Albania", "Tirana"), ("Morocco", "Rabat"), ("Tunisia", "Tunis"),
    ("Nigeria", "Abuja"), ("Ghana", "Accra"), ("Uganda", "Kampala"), ("Senegal", "Dakar"),
    ("Pakistan", "Islamabad"), ("Bangladesh", "Dhaka"), ("Indonesia", "Jakarta"), ("Philippines", "Manila"),
    ("Afghanistan", "Kabul"), ("Iraq", "Baghdad"), ("Syria", "Damascus"), ("Jordan", "Amman"),
    ("Lebanon", "Beirut"), ("Qatar", "Doha"), ("Oman", "Muscat"), ("Colombia", "Bogota"),
    ("Venezuela", "Caracas"), ("Ecuador", "Quito"), ("Uruguay", "Montevideo"), ("Jamaica", "Kingston"),
    ("Nicaragua", "Managua"), ("Brazil", "Brasilia"), ("Laos", "Vientiane"), ("Taiwan", "Taipei"),
    ("Mongolia", "Ulaanbaatar"), ("Libya", "Tripoli"), ("Sudan", "Khartoum"), ("Zambia", "Lusaka"),
    ("Angola", "Luanda"), ("Rwanda", "Kigali"), ("Somalia", "Mogadishu"), ("Belarus", "Minsk"),
    ("Georgia", "Tbilisi"), ("Armenia", "Yerevan"), ("Azerbaijan", "Baku"), ("Uzbekistan", "Tashkent"),
    ("Cyprus", "Nicosia"), ("Malta", "Valletta"), ("Bosnia", "Sarajevo"), ("Bahrain", "Manama"),
    ("Israel", "Jerusalem"),
)


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _lora_settings(method: str, steps: int) -> dict[str, Any]:
    """The one set of settings both sides use."""
    return {"method": method, "max_steps": steps, "batch_size": 4 if method == "sft" else 2,
            "learning_rate": 2e-4, "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.05,
            "target_modules": "all-linear", "max_length": 512, "seed": 0, "beta": 0.1,
            "loss_type": "nll" if method == "sft" else ["sigmoid", "sft"]}


def throughput_data(work: Path) -> dict[str, Path]:
    sft = [{"messages": [{"role": "user", "content": QUESTION.format(c)}, {"role": "assistant", "content": a}]}
           for c, a in TRAIN_CAPITALS]
    dpo = [{"prompt": [{"role": "user", "content": QUESTION.format(c)}],
            "chosen": [{"role": "assistant", "content": a}],
            "rejected": [{"role": "assistant", "content": f"The capital of {c} is {a}, a city with a long history."}]}
           for c, a in TRAIN_CAPITALS]
    return {"sft": _jsonl(work / "tp_sft.jsonl", sft), "dpo": _jsonl(work / "tp_dpo.jsonl", dpo)}


def plain_trl(method: str, data: Path, base: Path, out: Path, s: dict[str, Any]) -> dict[str, Any]:
    """What a user would write with TRL alone (the baseline)."""
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    t0, c0 = time.perf_counter(), time.process_time()
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    ds = load_dataset("json", data_files=str(data), split="train")
    peft = LoraConfig(r=s["lora_r"], lora_alpha=s["lora_alpha"], lora_dropout=s["lora_dropout"],
                      target_modules=s["target_modules"], task_type="CAUSAL_LM")
    common = dict(output_dir=str(out), max_steps=s["max_steps"], per_device_train_batch_size=s["batch_size"],
                  learning_rate=s["learning_rate"], max_length=s["max_length"], seed=s["seed"], use_cpu=True,
                  bf16=False, gradient_checkpointing=False, report_to="none", save_strategy="no",
                  logging_steps=1, disable_tqdm=True)
    if method == "sft":
        trainer = SFTTrainer(model=model, args=SFTConfig(**common), train_dataset=ds, processing_class=tok,
                             peft_config=peft)
    else:
        args = DPOConfig(**common, beta=s["beta"], loss_type=s["loss_type"])
        trainer = DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, peft_config=peft)
    c1 = time.process_time()
    output = trainer.train()
    train_cpu = time.process_time() - c1
    tokens = max(h.get("num_tokens", 0) for h in trainer.state.log_history)
    runtime = output.metrics["train_runtime"]
    cpu = time.process_time() - c0
    return {"tokens": tokens, "train_runtime_s": runtime, "tokens_per_s": tokens / runtime,
            "wall_s": time.perf_counter() - t0, "cpu_s": cpu, "tokens_per_cpu_s": tokens / cpu,
            "train_cpu_s": train_cpu, "tokens_per_train_cpu_s": tokens / train_cpu}


def through_tuneloop(method: str, data: Path, base: Path, out: Path, s: dict[str, Any]) -> dict[str, Any]:
    from tuneloop.train.trl_trainer import TRLConfig, TRLTrainer

    t0, c0 = time.perf_counter(), time.process_time()
    result = TRLTrainer(TRLConfig(**s)).train(data, out, str(base), quiet=True)
    cpu = time.process_time() - c0
    m = result.metrics
    return {"tokens": m["tokens"], "train_runtime_s": m["train_runtime_s"], "tokens_per_s": m["tokens_per_s"],
            "wall_s": time.perf_counter() - t0, "cpu_s": cpu, "tokens_per_cpu_s": m["tokens"] / cpu,
            "train_cpu_s": m["train_cpu_s"], "tokens_per_train_cpu_s": m["tokens"] / m["train_cpu_s"]}


def bench_throughput(method: str, data: Path, base: Path, work: Path, steps: int, repeats: int) -> dict[str, Any]:
    s = _lora_settings(method, steps)
    runs: dict[str, list[dict]] = {"tuneloop": [], "plain_trl": []}
    for r in range(repeats):
        order = ("tuneloop", "plain_trl") if r % 2 == 0 else ("plain_trl", "tuneloop")
        for who in order:
            fn = through_tuneloop if who == "tuneloop" else plain_trl
            res = fn(method, data, base, work / f"{method}_{who}_{r}", s)
            runs[who].append(res)
            print(f"  {method} {who:9s} run {r}: {res['tokens_per_s']:.1f} tokens/s "
                  f"({res['tokens']} tokens in {res['train_runtime_s']:.1f} s; "
                  f"{res['tokens_per_train_cpu_s']:.1f} per training CPU-second, "
                  f"{res['tokens_per_cpu_s']:.1f} per CPU-second end to end)", flush=True)

    def med(key: str) -> dict[str, float]:
        return {who: statistics.median(x[key] for x in rs) for who, rs in runs.items()}

    def overhead(m: dict[str, float]) -> float:
        return round(100.0 * (m["plain_trl"] - m["tuneloop"]) / m["plain_trl"], 2)

    wall, cpu, e2e = med("tokens_per_s"), med("tokens_per_train_cpu_s"), med("tokens_per_cpu_s")
    # CPU time is what this process itself spent: unlike wall time it does not grow when other
    # processes take the cores, so on a shared machine it is the steadier comparison.
    return {"settings": s, "runs": runs,
            "tokens_per_s": {k: round(v, 2) for k, v in wall.items()}, "overhead_pct": overhead(wall),
            "tokens_per_train_cpu_s": {k: round(v, 2) for k, v in cpu.items()}, "overhead_cpu_pct": overhead(cpu),
            "tokens_per_cpu_s_end_to_end": {k: round(v, 2) for k, v in e2e.items()},
            "overhead_end_to_end_cpu_pct": overhead(e2e)}


def bench_runner_startup(data: Path, base: Path, work: Path, steps: int) -> dict[str, Any]:
    """The fixed cost of the subprocess runner: wall time vs the same run in-process."""
    from tuneloop.train.runner import TrainingRunner
    from tuneloop.train.trl_trainer import TRLConfig, TRLTrainer

    cfg = TRLConfig(**_lora_settings("sft", steps))
    t0 = time.perf_counter()
    runner = TrainingRunner(None, show_progress=False, num_threads=int(os.environ["TUNELOOP_BENCH_THREADS"]))
    res = runner.run(TRLTrainer(cfg), data, work / "runner_sft", str(base))
    wall = time.perf_counter() - t0
    return {"steps": steps, "runner_wall_s": round(wall, 2), "train_runtime_s": res.metrics["train_runtime_s"],
            "tokens_per_s": round(res.metrics["tokens_per_s"], 2)}


def demo_one_word(base: Path, work: Path, steps: int = 40, lr: float = 2e-4, samples: int = 2,
                  share_of_known: float = 0.8, target_modules: Any = "all-linear") -> dict[str, Any]:
    """Base weak on one-word answers -> LoRA SFT on its own answers, fixed -> golden pass rate up, gate.

    The gate's threshold is not a constant picked after the fact: it is ``share_of_known`` (fixed
    at 0.8 before any run) times the base model's *knowledge ceiling* on the golden set, the share
    of golden questions whose right capital appears anywhere in the champion's own answer. A
    format fine-tune cannot teach facts the model lacks, so "says in one word at least 80% of
    what it knows" is the bar; it is computed from the champion's answers before training.
    Measured (train.json): 0% -> 40% (12 gained, 0 lost, p = 0.0005) against a bar of 0.69, so
    the gate fails; lr 5e-4 on attention only gave 30%, lr 1e-3 on all linear layers 17%.
    """
    from tuneloop.evaluate import evaluate, get_suite
    from tuneloop.evaluate.gate import gate
    from tuneloop.models.local import LocalModelPool
    from tuneloop.train.runner import TrainingRunner
    from tuneloop.train.trl_trainer import TRLConfig, TRLTrainer

    c0 = time.process_time()
    pool = LocalModelPool()
    champion = pool.backend(base, max_new_tokens=16, name="champion")
    golden = get_suite("capitals").load()
    t0 = time.perf_counter()
    base_eval = evaluate(champion, golden, batch_size=8, progress=False)
    eval_s = time.perf_counter() - t0
    # 1) the knowledge ceiling, and from it the gate's threshold (before any training)
    known_golden = sum(str(e.expected).lower() in r.output.lower() for e, r in zip(golden, base_eval.results))
    ceiling = known_golden / max(1, base_eval.n)
    threshold = round(share_of_known * ceiling, 4)
    # 2) the model's own answers on training countries (none in the golden set): greedy + sampled
    convs = [[{"role": "user", "content": QUESTION.format(c)}] for c, _ in TRAIN_CAPITALS]
    answers = [[c.text for c in champion.chat_batch(convs, max_tokens=24)]]
    answers += [[c.text for c in champion.chat_batch(convs, max_tokens=24, temperature=0.8, seed=s + 1)]
                for s in range(samples)]
    per_q = list(zip(*answers))
    # 3) Rejection sampling (as in STaR): one SFT row per own answer whose content is right, so a
    #    capital the model states every time weighs more than one it hit once, and one it never
    #    states is not trained (teaching facts it lacks would teach it to make them up). The row
    #    is the bare city the user asked for; prompt/completion rows put the loss on it alone.
    sft, dpo = [], []
    for conv, (_, city), outs in zip(convs, TRAIN_CAPITALS, per_q):
        right = [o for o in outs if city.lower() in o.lower()]
        sft += [{"prompt": conv, "completion": [{"role": "assistant", "content": city}]}] * len(right)
        dpo += [{"prompt": conv, "chosen": [{"role": "assistant", "content": city}],
                 "rejected": [{"role": "assistant", "content": o}]} for o in sorted(set(right)) if o.strip() != city]
    sft_path = _jsonl(work / "demo_sft.jsonl", sft)
    _jsonl(work / "demo_dpo.jsonl", dpo)  # built for the record; this demo trains SFT only
    # 4) train the challenger through the subprocess runner (the production path)
    cfg = TRLConfig(method="sft", max_steps=steps, batch_size=4, learning_rate=lr, lora_r=16, lora_alpha=32,
                    target_modules=target_modules)
    t1 = time.perf_counter()
    runner = TrainingRunner(None, show_progress=True, num_threads=int(os.environ.get("TUNELOOP_BENCH_THREADS", 1)))
    result = runner.run(TRLTrainer(cfg), sft_path, work / "demo_run", str(base))
    train_s = time.perf_counter() - t1
    # 5) golden set: challenger vs champion, and the gate
    challenger = pool.backend(base, result.adapter_path, max_new_tokens=16, name="challenger")
    cand_eval = evaluate(challenger, golden, batch_size=8, progress=False)
    decision = gate(cand_eval, base_eval, threshold=threshold)
    paired = decision.paired
    rows = list(zip(golden, base_eval.results, cand_eval.results))
    return {
        "golden_suite": "capitals", "golden_n": base_eval.n,
        "knowledge_ceiling": {"champion_answers_containing_the_capital": known_golden, "share": round(ceiling, 4),
                              "share_of_known_required": share_of_known, "threshold": threshold},
        "champion_pass_rate": base_eval.pass_rate, "challenger_pass_rate": cand_eval.pass_rate,
        "challenger_share_of_known": round(cand_eval.pass_rate / ceiling, 4) if ceiling else None,
        "gate": {"threshold": threshold, "passed": decision.passed, "p_value": decision.p_value,
                 "gained": paired.improvements if paired else None, "lost": paired.regressions if paired else None,
                 "reasons": list(decision.reasons)},
        "train": {"questions": len(convs), "answers_per_question": 1 + samples,
                  "questions_with_a_right_answer": sum(any(c.lower() in o.lower() for o in outs)
                                                       for (_, c), outs in zip(TRAIN_CAPITALS, per_q)),
                  "sft_rows": len(sft), "dpo_pairs_built": len(dpo), "steps": steps, "batch_size": 4,
                  "learning_rate": lr, "target_modules": target_modules, "seconds": round(train_s, 1),
                  "cpu_seconds_runner_process": round(result.metrics.get("train_cpu_s", float("nan")), 1),
                  "train_loss_first": result.metrics["train_loss_first"],
                  "train_loss_last": result.metrics["train_loss_last"]},
        "own_answers_sample": [list(x) for x in per_q[:2]],
        "eval_seconds_per_model": round(eval_s, 1), "cpu_seconds_parent_process": round(time.process_time() - c0, 1),
        "failures": [{"expected": e.expected, "champion": b.output, "challenger": c.output}
                     for e, b, c in rows if not c.passed],
        "examples": [{"prompt": e.prompt, "champion": b.output, "challenger": c.output} for e, b, c in rows[:5]],
    }


# Retriever demo: made-up jargon ("zorp" = refund, ...) that all-MiniLM-L6-v2 cannot know.
JARGON = {"zorp": "How to get a refund for the {}", "blick": "Shipping times for the {}",
          "quam": "Reset the password of the {} app", "frell": "Warranty terms of the {}",
          "snib": "Cancel my subscription to the {} service", "vorn": "User manual of the {}"}
TRAIN_PRODUCTS = ("blender", "kettle", "toaster", "drone", "lamp", "router", "camera", "speaker", "scooter",
                  "printer", "monitor", "keyboard")
HELDOUT_PRODUCTS = ("vacuum", "headphones", "smartwatch", "projector", "thermostat", "microwave")


def _jargon_rows(products) -> list[dict]:
    words = list(JARGON)
    return [{"query": f"{w} {p}", "positive": JARGON[w].format(p), "negative": JARGON[words[(i + k) % len(words)]].format(p)}
            for p in products for i, w in enumerate(words) for k in (1, 2)]


def demo_retriever(work: Path, steps: int = 40) -> dict[str, Any]:
    """Fine-tune all-MiniLM-L6-v2 on triplets; MRR on held-out products (queries never seen) before/after."""
    from tuneloop.models.embed import MiniLMEmbedder
    from tuneloop.train.retriever import RetrieverConfig, RetrieverTrainer, mrr
    from tuneloop.train.runner import TrainingRunner

    data = _jsonl(work / "triplets.jsonl", _jargon_rows(TRAIN_PRODUCTS))
    queries = [(f"{w} {p}", JARGON[w].format(p)) for p in HELDOUT_PRODUCTS for w in JARGON]
    docs = sorted({d for _, d in queries})
    gold = [docs.index(d) for _, d in queries]

    def score(embedder) -> float:
        return mrr(embedder.encode([q for q, _ in queries]), embedder.encode(docs), gold)

    before = score(MiniLMEmbedder())
    cfg = RetrieverConfig(max_steps=steps, batch_size=16, learning_rate=5e-5)
    t0 = time.perf_counter()
    runner = TrainingRunner(None, show_progress=True, num_threads=int(os.environ.get("TUNELOOP_BENCH_THREADS", 1)))
    result = runner.run(RetrieverTrainer(cfg), data, work / "retriever", None)
    after = score(MiniLMEmbedder(result.model_path))
    return {"heldout_queries": len(queries), "candidates": len(docs), "mrr_before": round(before, 4),
            "mrr_after": round(after, 4), "train_rows": result.metrics["train_rows"], "steps": steps,
            "seconds": round(time.perf_counter() - t0, 1),
            "train_loss_first": result.metrics["train_loss_first"], "train_loss_last": result.metrics["train_loss_last"]}


def run(quick: bool = False, skip_demo: bool = False, data_dir: str | None = None, repeats: int | None = None,
        out_path: Path = RESULTS, threads: int | None = None, only: str | None = None) -> dict[str, Any]:
    """Run the benchmark and write ``benchmarks/results/train.json``; return the results.

    ``only``: ``throughput`` or ``demos`` runs that part and keeps the other part's last results
    in the file. ``threads``: torch threads (default: the CPU count, at most 4). On a CPU shared
    with other busy processes, 1 is faster and steadier: OpenMP threads wait at barriers.
    """
    import torch

    from tuneloop.models.resolve import resolve_model

    threads = threads or int(os.environ.get("TUNELOOP_BENCH_THREADS", 0)) or max(1, min(4, os.cpu_count() or 1))
    torch.set_num_threads(threads)
    os.environ["TUNELOOP_BENCH_THREADS"] = str(threads)
    base = resolve_model("smollm2", data_dir)
    repeats = repeats or (1 if quick else 2)
    previous = json.loads(out_path.read_text()) if (only and out_path.exists()) else {}
    results: dict[str, Any] = {**previous, "model": "SmolLM2-135M-Instruct", "device": "cpu",
                               "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}}
    stamp = {"threads": threads, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "quick": quick}
    with tempfile.TemporaryDirectory(prefix="tuneloop-bench-train-") as tmp:
        work = Path(tmp)
        data = throughput_data(work)
        if only in (None, "throughput"):
            print("SFT tokens/s: tuneloop vs plain TRL", flush=True)
            results["sft"] = stamp | bench_throughput("sft", data["sft"], base, work, 4 if quick else 8, repeats)
            print("DPO tokens/s: tuneloop vs plain TRL", flush=True)
            results["dpo"] = stamp | bench_throughput("dpo", data["dpo"], base, work, 3 if quick else 6, repeats)
            if not quick:
                results["runner"] = stamp | bench_runner_startup(data["sft"], base, work, 4)
        if only in (None, "demos", "one-word") and not skip_demo:
            print("one-word demonstration: base vs LoRA SFT challenger on the golden capitals suite", flush=True)
            results["one_word_demo"] = stamp | demo_one_word(base, work, steps=16 if quick else 40)
        if only in (None, "demos") and not skip_demo:
            print("retriever demonstration: all-MiniLM-L6-v2 on triplets, MRR on held-out queries", flush=True)
            results["retriever_demo"] = stamp | demo_retriever(work, steps=15 if quick else 40)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(results, indent=2, default=str))
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--skip-demo", action="store_true")
    ap.add_argument("--repeats", type=int)
    ap.add_argument("--data-dir", help="where the converted SmolLM2 folder is cached")
    ap.add_argument("--threads", type=int, help="torch threads (default: CPU count, at most 4)")
    ap.add_argument("--only", choices=("throughput", "demos", "one-word"), help="run one part, keep the other's results")
    ns = ap.parse_args(argv)
    res = run(quick=ns.quick, skip_demo=ns.skip_demo, data_dir=ns.data_dir, repeats=ns.repeats, threads=ns.threads,
              only=ns.only)
    summary = {k: res[k]["tokens_per_s"] | {"overhead_pct": res[k]["overhead_pct"],
                                            "overhead_cpu_pct": res[k].get("overhead_cpu_pct")}
               for k in ("sft", "dpo") if k in res}
    if "one_word_demo" in res:
        d = res["one_word_demo"]
        summary["one_word"] = {"champion": d["champion_pass_rate"], "challenger": d["challenger_pass_rate"],
                               "gate_passed": d["gate"]["passed"]}
        summary["one_word"] |= {"threshold": d["gate"]["threshold"], "p_value": d["gate"]["p_value"]}
    if "retriever_demo" in res:
        summary["retriever_mrr"] = {k: res["retriever_demo"][k] for k in ("mrr_before", "mrr_after")}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
