"""Benchmark: SFT + DPO datasets from 1,000,000 interactions, and MinHash vs datasketch.

Target (issue 5, item 8): each build <= 120 s end to end and <= 2 GB peak memory on a
2-core machine, with exact + near-duplicate removal and PII scrubbing; rows/s per stage.

    python -m benchmarks.bench_datasets                  # 1M rows -> benchmarks/results/datasets.json
    python -m benchmarks.bench_datasets --rows 200000    # smaller
    python -m benchmarks.bench_datasets --minhash-only

The interactions are written to a SQLite file first (not timed); each build then runs in a
fresh subprocess so its wall time and peak RSS are its own. The synthetic traffic: pseudo-
word queries from templates, answers of 4-7 sentences from a pool, 5% exact duplicates
(case / punctuation changed), 5% planted near-duplicates (one word of the answer edited or a
word appended), 2% heavier rewrites of an earlier answer (an eighth of its words replaced:
Jaccard mostly below the threshold, so NOT duplicates), 3% rows with PII, 4% regenerate chains, 30% rows with a reward, 1% without
consent, 200 golden prompts of which 0.05% of rows leak one.

The MinHash comparison runs our vectorized MinHash-LSH and datasketch's ``MinHashLSH`` on
the same 100,000 texts (same word 3-gram shingles, 128 permutations, threshold 0.8):
seconds, recall of the planted near-duplicates whose true Jaccard is >= the threshold, and
the false-positive rate on planted rewrites whose true Jaccard is < threshold - 0.05.
datasketch's LSH returns unverified candidates; ours verifies each candidate pair.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "datasets.json"
WORK = Path(os.environ.get("TUNELOOP_BENCH_DIR", "/tmp/tuneloop_bench"))
THRESHOLD = 0.8

_SYL = ["ka", "lo", "mi", "ne", "ru", "ta", "vo", "shi", "pe", "da", "gu", "zo", "fi", "be", "no", "ri",
        "sa", "te", "yu", "ha", "po", "ki", "me", "lu", "xa", "qui", "ren", "tor", "van", "del"]
_TEMPLATES = ["How do I {} the {} in {}?", "What is the best way to {} a {}?", "Explain {} to a {} beginner.",
              "Why does my {} fail when {} is {}?", "Compare {} and {} for {}.", "Write a short note about {} and {}.",
              "Can you summarize {} for {}?", "Give me three tips on {} with {}.", "Is {} better than {}?",
              "Translate '{} {}' into {}."]
_PII = ["Contact me at {}@example.com.", "My card is 4111 1111 1111 1111.", "Call me on +1 415-555-{:04d}.",
        "The server is 10.0.{}.7.", "Use key AKIAIOSFODNN7EXA{:04d}.", "IBAN DE89 3704 0044 0532 0130 00 ({})."]


class World:
    """Deterministic synthetic traffic (same seed -> same rows)."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        r = self.rng
        words = set()
        while len(words) < 6000:
            words.add("".join(r.choice(_SYL) for _ in range(r.randint(2, 3))))
        self.words = sorted(words)
        self.sentences = [" ".join(r.choices(self.words, k=r.randint(6, 13))).capitalize() + "."
                          for _ in range(60000)]
        self.golden = [self.query() for _ in range(200)]

    def query(self) -> str:
        t = self.rng.choice(_TEMPLATES)
        return t.format(*self.rng.choices(self.words, k=t.count("{}")))

    def answer(self) -> str:
        return " ".join(self.rng.choices(self.sentences, k=self.rng.randint(4, 7)))

    def rows(self, n: int):
        """Yield (row dict, planted label, source index) for n interactions."""
        r = self.rng
        kept: list[tuple[str, str]] = []
        ts, i = 1.7e9, 0
        while i < n:
            ts += r.uniform(1.0, 30.0)
            user = f"u{r.randrange(max(1, n // 40))}"
            session = f"{user}-s{int(ts // 1800)}"
            x = r.random()
            label, src = "plain", -1
            if kept and x < 0.05:
                src = r.randrange(len(kept))
                q, a = kept[src]
                q, a, label = q.upper(), a.rstrip(".") + "!", "exact"
            elif kept and x < 0.10:
                src = r.randrange(len(kept))
                q, a = kept[src]
                words = a.split()
                if r.random() < 0.5:
                    words[r.randrange(len(words))] = r.choice(self.words)
                else:
                    words.append(r.choice(self.words))
                a, label = " ".join(words), "near"
            elif kept and x < 0.12:   # a heavier rewrite (Jaccard ~0.4-0.7): NOT a near-duplicate
                src = r.randrange(len(kept))
                q, a = kept[src]
                words = a.split()
                for _ in range(max(2, len(words) // 8)):
                    words[r.randrange(len(words))] = r.choice(self.words)
                a, label = " ".join(words), "far"
            else:
                q = r.choice(self.golden) if x < 0.1205 else self.query()
                a = self.answer()
                label = "golden" if x < 0.1205 else "plain"
            if r.random() < 0.03:
                a = a + " " + r.choice(_PII).format(r.randrange(10000))
            kept.append((q, a))
            yield self._row(i, ts, user, session, q, a), label, src
            i += 1
            if i < n and r.random() < 0.04:   # the user regenerates this answer
                ts += r.uniform(2.0, 20.0)
                a2 = self.answer()
                kept.append((q, a2))
                row = self._row(i, ts, user, session, q, a2)
                yield row, "regenerated_of", i - 1
                i += 1

    def _row(self, i, ts, user, session, q, a) -> dict:
        r = self.rng
        return {"id": f"{i:09d}", "ts": ts, "user_id": user, "session_id": session, "query": q, "response": a,
                "quality_score": round(min(1.0, r.betavariate(5, 1.5)), 3),
                "reward": float(r.randint(-3, 3)) if r.random() < 0.3 else None,
                "failure_category": "refusal" if r.random() < 0.02 else None,
                "consent": 0 if r.random() < 0.01 else 1, "version_id": f"v{r.randint(1, 3)}"}


def write_db(path: Path, n: int, seed: int) -> dict:
    """Write n interactions (+ regenerate feedback, golden prompts) into a fresh SQLite file."""
    from tuneloop.store import Database

    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    Database.open(path=str(path)).close()   # migrations
    world = World(seed)
    t0 = time.perf_counter()
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    cols = ("id", "ts", "kind", "user_id", "session_id", "model", "version_id", "query", "messages", "response",
            "status", "quality_score", "reward", "failure_category", "consent")
    ins = f"INSERT INTO interactions ({','.join(cols)}) VALUES ({','.join('?' * len(cols))})"
    fb_ins = "INSERT INTO feedback (id, interaction_id, kind, value, source, ts) VALUES (?,?,?,?,?,?)"
    batch, fbs, prev = [], [], None
    for row, label, src in world.rows(n):
        msgs = json.dumps([{"role": "user", "content": row["query"]}])
        batch.append((row["id"], row["ts"], "chat", row["user_id"], row["session_id"], "m", row["version_id"],
                      row["query"], msgs, row["response"], "ok", row["quality_score"], row["reward"],
                      row["failure_category"], row["consent"]))
        if label == "regenerated_of" and prev is not None:
            fbs.append((f"fb{prev}", prev, "regenerate", 1.0, "user", row["ts"]))
        prev = row["id"]
        if len(batch) >= 50000:
            con.executemany(ins, batch)
            con.executemany(fb_ins, fbs)
            con.commit()
            batch, fbs = [], []
    con.executemany(ins, batch)
    con.executemany(fb_ins, fbs)
    con.executemany("INSERT INTO golden_examples (id, set_name, version, prompt, checker, status, created_at) "
                    "VALUES (?, 'default', 1, ?, 'exact', 'approved', 0)",
                    [(f"g{i}", p) for i, p in enumerate(world.golden)])
    con.commit()
    con.close()
    return {"rows": n, "seconds": round(time.perf_counter() - t0, 1), "bytes": path.stat().st_size}


def build(db_path: Path, kind: str, out_dir: Path, progress: bool) -> dict:
    """One build, timed, in this (fresh) process."""
    from tuneloop.datasets.generator import DataGeneratorConfig, TrainingDataGenerator
    from tuneloop.store import Database

    db = Database.open(path=str(db_path))
    # SFT in TRL's "messages" format: TRL and LLaMA-Factory both read it as is (the seed's
    # default "chatml" text needs a LLaMA-Factory sibling file: one more pass over the rows).
    cfg = DataGeneratorConfig(kind=kind, format_type="messages", near_dedup_threshold=THRESHOLD, scrub_pii=True,
                              deduplicate=True,
                              validation_fraction=0.02, show_progress=progress,
                              dpo_sources=("regenerate", "rewards"))
    t0, c0 = time.perf_counter(), _cpu()
    res = TrainingDataGenerator(db, cfg).generate(out_dir / f"{kind}.jsonl")
    seconds, cpu = time.perf_counter() - t0, _cpu() - c0
    # Wall time depends on what else the shared machine runs; CPU time on this process only.
    return {"kind": kind, "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2),
            "load_avg_1m_after": os.getloadavg()[0],
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "final_count": res.final_count, "train": res.train_count, "validation": res.validation_count,
            "dropped": res.dropped, "pii_counts": res.pii_counts, "counts": res.counts,
            "stage_seconds": res.timings, "stage_rows_per_s": {k: round(v) for k, v in res.rates.items()},
            "read_rows_per_s": round(res.counts.get("read", 0) / seconds),
            "output_bytes": Path(res.path).stat().st_size}


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _subprocess(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_datasets", *args], check=True,
                         stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _true_jaccard(a: str, b: str) -> float:
    from tuneloop.datasets.dedup import MinHasher

    def sh(t):
        w = MinHasher.words(t)
        return {" ".join(w[i:i + 3]) for i in range(len(w) - 2)}
    sa, sb = sh(a), sh(b)
    return len(sa & sb) / len(sa | sb)


def minhash_compare(n: int, seed: int) -> dict:
    """Ours vs datasketch MinHashLSH on the same n texts: seconds, recall, false flags."""
    import numpy as np
    from datasketch import MinHash, MinHashLSH

    from tuneloop.datasets.dedup import MinHasher, NearDuplicateIndex

    texts, labels, sources = [], [], []
    for row, label, src in World(seed).rows(n):
        texts.append(row["query"] + "\n" + row["response"])
        labels.append(label)
        sources.append(src)
    near = [i for i, lab in enumerate(labels) if lab == "near"]
    truth = {i for i in near if _true_jaccard(texts[i], texts[sources[i]]) >= THRESHOLD}
    # Rewrites below the threshold must be kept: flagging one is a false positive.
    far = {i for i, lab in enumerate(labels) if lab in ("far", "near")
           and _true_jaccard(texts[i], texts[sources[i]]) < THRESHOLD - 0.05}
    exact = {i for i, lab in enumerate(labels) if lab == "exact"}
    out: dict = {"rows": n, "threshold": THRESHOLD, "num_perm": 128, "planted_near": len(near),
                 "planted_near_above_threshold": len(truth), "planted_exact": len(exact),
                 "planted_rewrites_below_threshold": len(far)}

    t0 = time.perf_counter()
    idx = NearDuplicateIndex(THRESHOLD, num_perm=128)
    for s in range(0, n, 4096):
        idx.add_texts(texts[s:s + 4096])
    ours = idx.duplicates()
    out["tuneloop"] = _score(ours, truth, exact, far, labels, time.perf_counter() - t0)
    out["tuneloop"]["bands_rows"] = [idx.bands, idx.rows]

    def shingles(t):
        w = MinHasher.words(t)
        return [" ".join(w[i:i + 3]).encode() for i in range(len(w) - 2)] or [" ".join(w).encode()]

    for name, weights in (("datasketch", (0.5, 0.5)), ("datasketch_recall_bands", (0.1, 0.9))):
        t0 = time.perf_counter()
        lsh = MinHashLSH(threshold=THRESHOLD, num_perm=128, weights=weights)
        flags = np.zeros(n, dtype=bool)
        sigs = MinHash.bulk((shingles(t) for t in texts), num_perm=128)
        for i, m in enumerate(sigs):
            if lsh.query(m):
                flags[i] = True   # datasketch returns candidates: no verification
            else:
                lsh.insert(i, m)
        out[name] = _score(flags, truth, exact, far, labels, time.perf_counter() - t0)
        out[name]["bands_rows"] = list(lsh.b_and_r) if hasattr(lsh, "b_and_r") else [lsh.b, lsh.r]
    out["speedup_vs_datasketch"] = round(out["datasketch"]["seconds"] / out["tuneloop"]["seconds"], 1)
    return out


def _score(flags, truth: set, exact: set, far: set, labels: list, seconds: float) -> dict:
    flagged = {int(i) for i in flags.nonzero()[0]}
    planted = {i for i, lab in enumerate(labels) if lab in ("near", "exact", "far")}
    return {"seconds": round(seconds, 2), "rows_per_s": round(len(labels) / seconds),
            "recall_planted_near": round(len(flagged & truth) / max(1, len(truth)), 4),
            "recall_planted_exact": round(len(flagged & exact) / max(1, len(exact)), 4),
            "false_positive_rate_rewrites": round(len(flagged & far) / max(1, len(far)), 4),
            "flagged": len(flagged), "flagged_unrelated": len(flagged - planted)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--minhash-rows", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reuse-db", action="store_true", help="keep an existing database of the same size")
    ap.add_argument("--minhash-only", action="store_true")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--phase", choices=["build", "minhash"], help=argparse.SUPPRESS)
    ap.add_argument("--kind", default="sft", help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    WORK.mkdir(parents=True, exist_ok=True)
    db_path = WORK / f"bench_{args.rows}.db"
    if args.phase == "build":
        print(json.dumps(build(db_path, args.kind, WORK / "out", args.progress)))
        return
    if args.phase == "minhash":
        print(json.dumps(minhash_compare(args.minhash_rows, args.seed)))
        return
    result: dict = {"benchmark": "datasets", "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                                         "load_avg_start": os.getloadavg()}}
    if not args.minhash_only:
        if not (args.reuse_db and db_path.exists()):
            print(f"writing {args.rows:,} interactions to {db_path} ...", file=sys.stderr)
            result["db"] = write_db(db_path, args.rows, args.seed)
        result["targets"] = {"seconds_per_build": 120, "peak_rss_mb": 2048}
        for kind in ("sft", "dpo"):
            print(f"building {kind} ...", file=sys.stderr)
            extra = ["--progress"] if args.progress else []
            result[kind] = _subprocess(["--phase", "build", "--kind", kind, "--rows", str(args.rows), *extra])
            print(f"  {kind}: {result[kind]['seconds']} s, {result[kind]['peak_rss_mb']} MB peak", file=sys.stderr)
    print("MinHash comparison ...", file=sys.stderr)
    result["minhash"] = _subprocess(["--phase", "minhash", "--minhash-rows", str(args.minhash_rows),
                                     "--seed", str(args.seed)])
    result["machine"]["load_avg_end"] = os.getloadavg()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
