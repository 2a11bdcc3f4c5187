"""Benchmark: retrieval — the vector index at 100,000 x 384, and one learning cycle on >= 10,000 documents.

    python -m benchmarks.bench_retrieval --phase index     # engines: recall@10 vs exact, p50/p99, builds
    python -m benchmarks.bench_retrieval --phase learn     # MRR@10 before/after a cycle, reranker nDCG, docs/s
    python -m benchmarks.bench_retrieval --phase learn --entities 300   # a reduced corpus (3,000 documents)

Each phase merges its numbers into benchmarks/results/retrieval.json.

**index**: 100,000 unit vectors of 384 dimensions shaped like sentence embeddings (2,000
topic centres plus a shared direction plus noise; the nearest neighbour of a query has
cosine ~0.7, as with all-MiniLM-L6-v2 on a support corpus) and 1,000 held-out queries.
Every installed engine is built once (cached under ``--cache``) and queried one query at
a time, the engines interleaved query by query so that load from other processes hits
them alike. Latency is reported as wall time and as the querying thread's CPU time (what
an idle machine would see). Targets: p99 <= 5 ms, recall@10 >= 0.95.

**learn**: the generated product-support corpus (:mod:`tuneloop.retrieval.synthetic`,
``--entities`` x 10 aspects), queries split by product (70% of products produce traffic,
30% are held out as the golden set). Simulated users search through
:class:`~tuneloop.retrieval.search.RetrievalIndex` and report clicks; one
:func:`~tuneloop.retrieval.cycle.retrieval_cycle` trains the retriever on the mined
triplets and a reranker; MRR@10 / nDCG@10 on held-out queries before and after, with the
gate's paired bootstrap p-value.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "retrieval.json"
DIM, N, NQ = 384, 100_000, 1_000


# ---------------------------------------------------------------- vectors
def make_vectors(n: int = N, nq: int = NQ, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)

    def mixture(m: int, centers: np.ndarray) -> np.ndarray:
        c = centers[rng.integers(0, len(centers), m)]
        x = c + 0.7 * rng.normal(size=(m, DIM)).astype(np.float32) / np.sqrt(DIM)
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    centers = rng.normal(size=(2000, DIM)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    shared = rng.normal(size=DIM).astype(np.float32)
    centers = centers + 0.5 * shared / np.linalg.norm(shared)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    return mixture(n, centers), mixture(nq, centers)


def _exact(x: np.ndarray, q: np.ndarray, k: int = 10) -> np.ndarray:
    out = np.empty((len(q), k), dtype=np.int64)
    for i in range(0, len(q), 100):
        s = q[i:i + 100] @ x.T
        top = np.argpartition(-s, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(s, top, 1), axis=1)
        out[i:i + 100] = np.take_along_axis(top, order, 1)
    return out


def _build_all(x: np.ndarray, cache: Path, threads: int) -> dict[str, tuple[Any, float | None]]:
    """Each installed engine's index over ``x`` (loaded from ``cache`` when built before)."""
    built: dict[str, tuple[Any, float | None]] = {}
    specs = _specs(x.shape[1], threads)
    for name, (make, add, save, load) in specs.items():
        path = cache / f"{name}.bin"
        if path.exists():
            built[name] = (load(path), None)
            continue
        t0 = time.perf_counter()
        ix = make()
        add(ix, x)
        seconds = time.perf_counter() - t0
        save(ix, path)
        built[name] = (ix, seconds)
        (cache / f"{name}.build_seconds").write_text(str(seconds))
        print(f"built {name} in {seconds:.0f} s", flush=True)
    for name in built:
        f = cache / f"{name}.build_seconds"
        if built[name][1] is None and f.exists():
            built[name] = (built[name][0], float(f.read_text()))
    return built


def _specs(dim: int, threads: int) -> dict[str, tuple[Callable, Callable, Callable, Callable]]:
    """name -> (make, add, save, load) for each installed engine (HNSW: M=16, efConstruction=128)."""
    specs: dict[str, tuple] = {}
    try:
        import hnswlib

        def h_make():
            ix = hnswlib.Index(space="ip", dim=dim)
            ix.init_index(max_elements=N, ef_construction=128, M=16, allow_replace_deleted=True)
            ix.set_num_threads(threads)
            return ix

        def h_load(p):
            ix = hnswlib.Index(space="ip", dim=dim)
            ix.load_index(str(p), allow_replace_deleted=True)
            return ix

        specs["hnswlib"] = (h_make, lambda ix, x: ix.add_items(x, np.arange(len(x))),
                            lambda ix, p: ix.save_index(str(p)), h_load)
    except ImportError:
        pass
    try:
        from usearch.index import Index

        for dt in ("f32", "f16", "i8"):
            specs[f"usearch_{dt}"] = (
                lambda dt=dt: Index(ndim=dim, metric="ip", dtype=dt, connectivity=16, expansion_add=128),
                lambda ix, x: ix.add(np.arange(len(x), dtype=np.uint64), x, threads=threads),
                lambda ix, p: ix.save(str(p)), lambda p: Index.restore(str(p)))
    except ImportError:
        pass
    try:
        import faiss

        faiss.omp_set_num_threads(threads)

        def f_make():
            ix = faiss.IndexHNSWFlat(dim, 16, faiss.METRIC_INNER_PRODUCT)
            ix.hnsw.efConstruction = 128
            return ix

        specs["faiss_hnsw"] = (f_make, lambda ix, x: ix.add(x), lambda ix, p: faiss.write_index(ix, str(p)),
                               lambda p: faiss.read_index(str(p)))

        def ivf_make():
            return faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, 1024, faiss.METRIC_INNER_PRODUCT)

        def ivf_add(ix, x):
            ix.train(x)
            ix.add(x)

        specs["faiss_ivf1024"] = (ivf_make, ivf_add, lambda ix, p: faiss.write_index(ix, str(p)),
                                  lambda p: faiss.read_index(str(p)))
    except ImportError:
        pass
    return specs


def _query_fns(built: dict[str, tuple[Any, float | None]], x: np.ndarray) -> dict[str, Callable]:
    fns: dict[str, Callable] = {}
    for name, (ix, _) in built.items():
        for ef in (32, 64, 128):
            if name == "hnswlib":
                ix.set_num_threads(1)
                fns[f"hnswlib ef{ef}"] = lambda q, ix=ix, ef=ef: (ix.set_ef(ef), ix.knn_query(q, 10)[0][0])[1]
            elif name.startswith("usearch"):
                fns[f"{name} ef{ef}"] = lambda q, ix=ix, ef=ef: (
                    setattr(ix, "expansion_search", ef), ix.search(q, 10, threads=1).keys)[1]
            elif name == "faiss_hnsw":
                fns[f"faiss_hnsw ef{ef}"] = lambda q, ix=ix, ef=ef: (
                    setattr(ix.hnsw, "efSearch", ef), ix.search(q[None], 10)[1][0])[1]
        if name == "faiss_ivf1024":
            for nprobe in (8, 32):
                fns[f"faiss_ivf1024 nprobe{nprobe}"] = lambda q, ix=ix, p=nprobe: (
                    setattr(ix, "nprobe", p), ix.search(q[None], 10)[1][0])[1]
    try:
        import faiss

        faiss.omp_set_num_threads(1)
    except ImportError:
        pass

    def numpy_exact(q: np.ndarray) -> np.ndarray:
        s = x @ q
        top = np.argpartition(-s, 10)[:10]
        return top[np.argsort(-s[top])]

    fns["numpy exact"] = numpy_exact
    return fns


def _wrapper_latency(x: np.ndarray, q: np.ndarray, truth: np.ndarray, cache: Path, threads: int) -> dict[str, Any]:
    """The default engine through EmbeddedIndex (string ids, labels): what RetrievalIndex searches."""
    from tuneloop.retrieval.index import EmbeddedIndex

    path = cache / "embedded_default"
    ids = [f"doc-{i}" for i in range(len(x))]
    t0 = time.perf_counter()
    if EmbeddedIndex.exists(path):
        ix = EmbeddedIndex.load(path)
        build = None
    else:
        ix = EmbeddedIndex(DIM, path=path)
        ix.threads = threads
        for i in range(0, len(x), 10_000):
            ix.upsert(ids[i:i + 10_000], x[i:i + 10_000], ["h"] * len(ids[i:i + 10_000]))
        ix.save()
        build = time.perf_counter() - t0
    load = time.perf_counter() - t0
    wall, cpu, rec = [], [], []
    for i, v in enumerate(q):
        c0, t = time.thread_time(), time.perf_counter()
        got = ix.search(v, 10)[0]
        wall.append(time.perf_counter() - t)
        cpu.append(time.thread_time() - c0)
        rec.append(len({int(d[4:]) for d, _ in got} & set(truth[i].tolist())) / 10)
    # incremental updates on the live 100k index: 1,000 replacements and 1,000 deletions
    rng = np.random.default_rng(1)
    pick = rng.choice(len(x), 1000, replace=False)
    t = time.perf_counter()
    ix.upsert([ids[i] for i in pick], x[rng.choice(len(x), 1000)], ["h2"] * 1000)
    upsert_s = time.perf_counter() - t
    t = time.perf_counter()
    ix.delete([ids[i] for i in pick])
    delete_s = time.perf_counter() - t
    gone = sum(d in {ids[i] for i in pick} for v in q[:200] for d, _ in ix.search(v, 10)[0])
    return {"engine": ix.engine, "build_seconds": build, "load_seconds": None if build else round(load, 2),
            **_summary(wall, cpu, rec), "upsert_ms_per_doc": 1000 * upsert_s / 1000,
            "delete_ms_per_doc": 1000 * delete_s / 1000, "deleted_docs_returned_after_delete": gone}


def _summary(wall: list[float], cpu: list[float], rec: list[float]) -> dict[str, float]:
    w, c = np.array(wall) * 1000, np.array(cpu) * 1000
    return {"recall@10": round(float(np.mean(rec)), 4), "p50_ms": round(float(np.percentile(w, 50)), 3),
            "p99_ms": round(float(np.percentile(w, 99)), 3), "cpu_p50_ms": round(float(np.percentile(c, 50)), 3),
            "cpu_p99_ms": round(float(np.percentile(c, 99)), 3)}


def phase_index(args: argparse.Namespace) -> dict[str, Any]:
    cache = Path(args.cache).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    x, q = make_vectors(args.rows, NQ)
    truth = _exact(x, q)
    built = _build_all(x, cache, args.threads)
    fns = _query_fns(built, x)
    names = list(fns)
    wall = {n: [] for n in names}
    cpu = {n: [] for n in names}
    rec = {n: [] for n in names}
    for i, v in enumerate(q):
        for n in names if i % 2 == 0 else names[::-1]:  # interleaved: background load hits all alike
            c0, t = time.thread_time(), time.perf_counter()
            got = fns[n](v)
            wall[n].append(time.perf_counter() - t)
            cpu[n].append(time.thread_time() - c0)
            rec[n].append(len({int(g) for g in got[:10]} & set(truth[i].tolist())) / 10)
    engines = {n: _summary(wall[n], cpu[n], rec[n]) for n in names}
    builds = {n: (round(s, 1) if s is not None else None) for n, (_, s) in built.items()}
    default = _wrapper_latency(x, q, truth, cache, args.threads)
    return {"choice": CHOICE, "rows": args.rows, "dim": DIM, "queries": NQ, "k": 10,
            "hnsw": {"M": 16, "efConstruction": 128, "efSearch_default": 64},
            "build_seconds_threads": args.threads, "build_seconds": builds, "engines": engines,
            "default_through_EmbeddedIndex": default,
            "targets": {"p99_ms": 5.0, "recall@10": 0.95},
            "meets_targets_cpu_time": default["cpu_p99_ms"] <= 5.0 and default["recall@10"] >= 0.95,
            "meets_targets_wall_time": default["p99_ms"] <= 5.0 and default["recall@10"] >= 0.95}


CHOICE = {
    "default_engine": "usearch (f16 vectors), efSearch 64",
    "why": [
        "every HNSW engine meets recall@10 >= 0.95 and p99 <= 5 ms of query CPU at 100k x 384; hnswlib is "
        "the fastest here (about 2x usearch per query, 2-3x per build), usearch f16 is 0.9995 recall at ~1 ms p99",
        "the index must absorb a stream of updates and deletions: usearch removes natively; hnswlib only "
        "tombstones (slots stay until reused) and needs explicit resizes; faiss HNSW cannot remove at all",
        "f16 storage halves memory at no measurable recall cost; the standby index stays loaded for instant rollback",
        "usearch ships wheels for every platform; hnswlib is source-only on PyPI (needs a C++ compiler)",
        "usearch i8 loses recall (0.89); faiss IVF needs training and retraining as the corpus drifts; "
        "sqlite-vec cannot load here (sqlite3 without extension loading) and is exact search; "
        "LanceDB IVF-PQ is trained and rebuilt to absorb updates",
    ],
    "fallbacks": "auto order usearch -> hnswlib -> numpy exact (no dependency); engine='hnswlib' to prefer speed",
}


# ---------------------------------------------------------------- learning
def phase_learn(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from tuneloop.registry.versions import Registry
    from tuneloop.retrieval.cycle import RetrievalCycleConfig, retrieval_cycle
    from tuneloop.retrieval.documents import DocumentStore
    from tuneloop.retrieval.evaluation import add_golden, evaluate_version, gate_versions, load_golden
    from tuneloop.retrieval.reembed import reembed
    from tuneloop.retrieval.search import RetrievalIndex
    from tuneloop.retrieval.synthetic import make_corpus, simulate_searches
    from tuneloop.retrieval.versions import register_base_retriever
    from tuneloop.store import Database

    torch.set_num_threads(args.threads)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-retrieval-"))
    db = Database.open(path=work / "tuneloop.db")
    root = work / "indexes"
    corpus = make_corpus(args.entities, seed=0)
    train_q, held_q = corpus.split(0.7, seed=0)
    rng = random.Random(0)
    traffic = rng.sample(train_q, min(args.train_queries, len(train_q)))
    golden = rng.sample(held_q, min(args.golden_queries, len(held_q)))
    out: dict[str, Any] = {"documents": len(corpus.docs), "products": args.entities, "queries_logged": len(traffic),
                           "golden_queries": len(golden), "workdir": str(work)}
    DocumentStore(db).upsert(corpus.docs)
    register_base_retriever(db)
    t0, c0 = time.perf_counter(), time.process_time()
    base_build = reembed(db, "minilm-base", root=root, progress=True, num_threads=args.threads,
                         index_threads=args.threads, switch=True)
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    # docs per CPU-second: on a shared host the wall-clock rate mostly measures the other tenants.
    out["reembed"] = {"documents": base_build.done, "seconds": round(secs, 1),
                      "docs_per_s": round(base_build.done / secs, 1), "cpu_seconds": round(cpu, 1),
                      "docs_per_cpu_s": round(base_build.done / cpu, 1), "torch_threads": args.threads}
    print(f"re-embedded {base_build.done} docs in {secs:.0f} s", flush=True)
    add_golden(db, [{"query": q.text, "relevant": [q.doc_id]} for q in golden])
    index = RetrievalIndex(db, root=root)
    t0 = time.perf_counter()
    out["traffic"] = simulate_searches(index, traffic, k=10)
    out["traffic"]["seconds"] = round(time.perf_counter() - t0, 1)
    cases = load_golden(db)
    before = evaluate_version(db, "minilm-base", cases)
    cfg = RetrievalCycleConfig(output_dir=str(work / "runs"), index_root=str(root), hard_negatives=3, rerank_candidates=20,
                               num_threads=args.threads, show_progress=True, min_gain=0.0,
                               retriever={"epochs": 1, "batch_size": 32, "learning_rate": 5e-5},
                               reranker={"max_steps": args.reranker_steps, "batch_size": 16, "learning_rate": 1e-4,
                                         "max_length": 128})
    t0 = time.perf_counter()
    cycle = retrieval_cycle(db, cfg)
    out["cycle_seconds"] = round(time.perf_counter() - t0, 1)
    out["cycle"] = cycle.to_dict()
    champ = Registry(db).champion("retriever").id
    after = evaluate_version(db, champ, cases)
    gate = gate_versions(after, before)
    out["retriever"] = {"before": before.summary(), "after": after.summary(), "mrr_gain": round(after.mrr - before.mrr, 4),
                        "p_value": gate.mrr_p_value, "promoted_version": champ}
    rr = cycle.get("reranker")
    if rr is not None and rr.gate:
        # The cycle's gate already scored "retriever champion + candidate reranker" against the
        # retriever alone (no reranker champion yet) on the same golden queries.
        g = rr.gate
        out["reranker"] = {"version": rr.version_id, "decision": rr.decision,
                           "retriever_alone": g["champion"], "with_reranker": g["candidate"],
                           "ndcg@10_gain": round(g["ndcg_gain"], 4), "ndcg_p_value": g["ndcg_p_value"],
                           "mrr_gain": round(g["mrr_gain"], 4), "mrr_p_value": g["mrr_p_value"],
                           "candidates_reranked": cfg.rerank_candidates}
    db.close()
    return out


def _merge(section: str, data: dict[str, Any]) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    current = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    current[section] = data
    current["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    RESULTS.write_text(json.dumps(current, indent=2, default=str) + "\n")


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--phase", choices=("index", "learn", "all"), default="all")
    ap.add_argument("--rows", type=int, default=N, help="vectors in the index phase")
    ap.add_argument("--cache", default="~/.cache/tuneloop-bench/retrieval", help="built indexes are kept here")
    ap.add_argument("--threads", type=int, default=2, help="threads for builds, embedding and training")
    ap.add_argument("--entities", type=int, default=1000, help="products in the learn corpus (x10 documents)")
    ap.add_argument("--train-queries", type=int, default=2000, help="logged searches that feed training")
    ap.add_argument("--golden-queries", type=int, default=1000, help="held-out queries in the golden set")
    ap.add_argument("--reranker-steps", type=int, default=200, help="reranker optimizer steps")
    ap.add_argument("--workdir", default=None, help="keep the learn phase's database and runs here")
    args = ap.parse_args(argv)
    if args.phase in ("index", "all"):
        t0 = time.perf_counter()
        res = phase_index(args)
        res["seconds"] = round(time.perf_counter() - t0, 1)
        _merge("index", res)
        print(json.dumps(res["default_through_EmbeddedIndex"], indent=2))
    if args.phase in ("learn", "all"):
        t0 = time.perf_counter()
        res = phase_learn(args)
        res["seconds"] = round(time.perf_counter() - t0, 1)
        _merge("learn", res)
        print(json.dumps({k: res.get(k) for k in ("retriever", "reranker", "reembed")}, indent=2, default=str))


if __name__ == "__main__":
    main()
