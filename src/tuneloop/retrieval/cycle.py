"""The retrieval cycle: retriever and reranker learn on their own, each behind its own gate.

:func:`retrieval_cycle` is what the loop calls, independently of the generator cycle:

1. **Guardrail** (seed 001: "MRR falls -> rollback"): the retriever champion is scored
   against the version it replaced, on the golden set and, when clients report enough,
   on click-through; a significant MRR drop beyond ``max_mrr_drop`` rolls it back —
   registry alias and serving index together, the old index is still there. The reranker
   champion is re-checked on the current retriever whenever that changed (here and after
   a retriever promotion): one that now hurts is taken out of service.
2. **Retriever**: triplets from the retrieval logs (datasets ``triplets`` builder), plus
   hard negatives mined from the index itself (top results that are not the positive);
   fine-tune the champion (:class:`tuneloop.train.retriever.RetrieverTrainer`, in the
   training subprocess); register a ``retriever`` version with lineage; re-embed the corpus
   into its own index; gate it against the champion on the golden set (MRR, nDCG@10,
   hit rate, paired bootstrap); promote and switch, or reject and drop its index.
3. **Reranker**: (query, doc, relevance) rows from the logs plus mined negatives; a
   cross-encoder (:class:`tuneloop.train.reranker.RerankerTrainer`), registered with its
   ``rerank_fusion`` (by default its ranks are fused with the retriever's:
   :func:`~tuneloop.retrieval.versions.rerank_order`); gate "champion retriever + candidate
   reranker" against "champion retriever + champion reranker" (or no reranker); promote or
   reject.

>>> RetrievalCycleConfig(min_triplets=10).golden_set
'retrieval'
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tuneloop.errors import ConflictError, ValidationError
from tuneloop.ids import new_id, now
from tuneloop.retrieval import builds as B
from tuneloop.retrieval.evaluation import (GOLDEN_SET, RetrievalGate, VersionEval, _served, click_through,
                                           evaluate_version, gate_versions, load_golden)
from tuneloop.retrieval.logs import attach_pending
from tuneloop.retrieval.reembed import reembed
from tuneloop.retrieval.versions import BASE_RETRIEVER, FUSIONS, register_base_retriever
from tuneloop.store import Database, schema

__all__ = ["RetrievalCycleConfig", "ComponentResult", "RetrievalCycleResult", "retrieval_cycle",
           "retrieval_guardrail", "reranker_guardrail", "promote_retriever", "rollback_retriever", "mine_hard_negatives"]


def _f(default: Any, help: str) -> Any:  # noqa: A002
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class RetrievalCycleConfig:
    """One retrieval cycle's settings."""

    golden_set: str = _f(GOLDEN_SET, "golden set of retrieval cases (query -> relevant document ids)")
    output_dir: str = _f("./.tuneloop/runs", "where datasets and trained models are written")
    components: tuple[str, ...] = _f(("retriever", "reranker"), "which components to train this cycle")
    k: int = _f(10, "cut-off of MRR and hit rate")
    min_triplets: int = _f(32, "fewer triplets from the logs: no retriever training this cycle")
    min_reranker_rows: int = _f(64, "fewer (query, doc, relevance) rows: no reranker training")
    hard_negatives: int = _f(3, "negatives mined from the index per triplet")
    mine_skip_top: int = _f(0, "skip this many top results when mining (guards against unlabeled positives)")
    retriever: dict = _f({}, "RetrieverConfig fields (epochs, batch_size, learning_rate, ...)")
    reranker: dict = _f({"loss": "listwise", "batch_size": 8},
                        "RerankerConfig fields (listwise: a softmax over each logged search's documents)")
    rerank_candidates: int = _f(30, "retrieved documents the reranker rescores")
    rerank_fusion: str = _f("rrf", "final order of a new reranker version: rrf (fuse retriever and reranker "
                                   "ranks) or none (reranker score alone); stored in the version's params")
    min_gain: float = _f(0.0, "MRR gain on the golden set a candidate needs")
    alpha: float = _f(0.05, "significance of the paired regression tests")
    max_mrr_drop: float = _f(0.02, "guardrail: a champion whose MRR falls more than this (significantly) rolls back")
    min_online_searches: int = _f(200, "guardrail: reported searches per version before click-through counts")
    since: float | None = _f(None, "only logs after this epoch time")
    engine: str = _f("auto", "index engine of new builds")
    index_root: str | None = _f(None, "index folder root (default: beside the database)")
    max_docs_per_s: float | None = _f(None, "re-embedding throttle")
    num_threads: int | None = _f(1, "torch threads of training and re-embedding")
    timeout_s: float | None = _f(None, "training timeout")
    show_progress: bool = _f(False, "progress bars")

    def __post_init__(self) -> None:
        self.components = tuple(self.components)
        unknown = set(self.components) - {"retriever", "reranker"}
        if unknown:
            raise ValidationError(f"unknown components {sorted(unknown)}: use retriever, reranker", field="components")
        if self.rerank_fusion not in FUSIONS:
            raise ValidationError(f"rerank_fusion must be one of {list(FUSIONS)}, not {self.rerank_fusion!r}",
                                  field="rerank_fusion")
        if self.k < 1 or self.hard_negatives < 0 or self.min_triplets < 2:
            raise ValidationError("k >= 1, hard_negatives >= 0 and min_triplets >= 2 are needed", field="k")


@dataclass(frozen=True)
class ComponentResult:
    """What one component's cycle did: ``decision`` is promoted | rejected | skipped."""

    component: str
    decision: str
    reason: str
    version_id: str | None = None
    dataset_id: str | None = None
    train_run_id: str | None = None
    build_id: str | None = None
    gate: dict | None = None
    metrics: dict | None = None


@dataclass(frozen=True)
class RetrievalCycleResult:
    guardrail: dict
    components: tuple[ComponentResult, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"guardrail": self.guardrail, "components": [asdict(c) for c in self.components]}

    def get(self, component: str) -> ComponentResult | None:
        return next((c for c in self.components if c.component == component), None)


# ---------------------------------------------------------------- promote / rollback
def _registry(db: Database):
    from tuneloop.registry.versions import Registry

    return Registry(db, actor="retrieval")


def promote_retriever(db: Database, version_id: str, *, reason: str | None = None, **reembed_kw: Any) -> B.IndexBuild:
    """Make ``version_id`` the retriever champion and serve its index (built first if missing)."""
    build = B.find_build(db, version_id) or reembed(db, version_id, progress=False, **reembed_kw)
    _registry(db).promote(version_id, reason=reason)
    return B.switch_to(db, build.id)


def rollback_retriever(db: Database, *, reason: str | None = None) -> B.IndexBuild:
    """Roll the retriever champion back and serve the previous index at once (the standby)."""
    target = _registry(db).rollback("retriever", reason=reason)
    standby = B.standby_build(db)
    if standby is not None and standby.embedder_version == target.id:
        return B.rollback_index(db)
    build = B.find_build(db, target.id) or reembed(db, target.id, progress=False)
    return B.switch_to(db, build.id)


def _ensure_champion(db: Database, cfg: RetrievalCycleConfig):
    reg = _registry(db)
    champ = reg.champion("retriever") or register_base_retriever(db)
    if B.find_build(db, champ.id) is None:
        build = reembed(db, champ.id, root=cfg.index_root, engine=cfg.engine, progress=cfg.show_progress,
                        num_threads=cfg.num_threads, max_docs_per_s=cfg.max_docs_per_s)
        if B.active_build(db) is None:
            B.switch_to(db, build.id)
    return reg.champion("retriever")


# ---------------------------------------------------------------- guardrail
def retrieval_guardrail(db: Database, cfg: RetrievalCycleConfig | None = None) -> dict[str, Any]:
    """Roll the retriever champion back when its MRR fell against the version it replaced."""
    cfg = cfg or RetrievalCycleConfig()
    reg = _registry(db)
    alias = reg.alias("retriever:champion")
    if alias is None or not alias.previous_version_id:
        return {"checked": False, "reason": "no previous retriever champion"}
    cur, prev = alias.version_id, alias.previous_version_id
    out: dict[str, Any] = {"checked": True, "champion": cur, "previous": prev, "rolled_back": False}
    golden = load_golden(db, cfg.golden_set)
    if golden and B.find_build(db, prev) is not None:
        a, b = (evaluate_version(db, v, golden, k=cfg.k) for v in (cur, prev))
        drop, p = _paired_drop(a.reciprocal_ranks, b.reciprocal_ranks)
        out["golden"] = {"mrr": a.mrr, "previous_mrr": b.mrr, "drop": drop, "p_value": p}
        if drop > cfg.max_mrr_drop and p < cfg.alpha:
            out["reason"] = f"golden MRR fell {drop:.4f} (p = {p:.3g})"
    online = click_through(db, since=alias.updated_at)
    before = click_through(db, until=alias.updated_at)
    if cur in online and prev in before and min(online[cur]["searches"], before[prev]["searches"]) >= cfg.min_online_searches:
        drop = before[prev]["mrr"] - online[cur]["mrr"]
        out["online"] = {"mrr": online[cur]["mrr"], "previous_mrr": before[prev]["mrr"], "drop": drop}
        if drop > cfg.max_mrr_drop and "reason" not in out:
            out["reason"] = f"online MRR fell {drop:.4f}"
    if out.get("reason"):
        rollback_retriever(db, reason=f"guardrail: {out['reason']}")
        out["rolled_back"] = True
    return out


def reranker_guardrail(db: Database, cfg: RetrievalCycleConfig | None = None, golden: list | None = None,
                       *, force: bool = False) -> dict[str, Any]:
    """Stop serving the reranker champion when it makes the retriever champion worse.

    A reranker learns on the candidates of the retriever it was trained with; after a new
    retriever is promoted (or one is rolled back) those candidates change, and a reranker
    that helped can hurt. Checked whenever the retriever champion changed after the
    reranker's promotion (or with ``force``): "retriever + reranker" against "retriever
    alone" on the golden set; a significant drop in MRR or nDCG@10 rejects the reranker and
    removes its alias, so searches go unreranked until a new reranker passes its gate.
    """
    cfg = cfg or RetrievalCycleConfig()
    reg = _registry(db)
    rr_alias, ret_alias = reg.alias("reranker:champion"), reg.alias("retriever:champion")
    if rr_alias is None or ret_alias is None:
        return {"checked": False, "reason": "no reranker champion"}
    if not force and ret_alias.updated_at <= rr_alias.updated_at:
        return {"checked": False, "reason": "the reranker was gated on the current retriever"}
    golden = golden if golden is not None else load_golden(db, cfg.golden_set)
    if not golden:
        return {"checked": False, "reason": f"golden set {cfg.golden_set!r} has no cases"}
    alone = evaluate_version(db, ret_alias.version_id, golden, k=cfg.k)
    with_rr = evaluate_version(db, ret_alias.version_id, golden, k=cfg.k, reranker=rr_alias.version_id,
                               candidates=cfg.rerank_candidates)
    g = gate_versions(with_rr, alone, alpha=cfg.alpha)
    hurts = ((g.mrr_gain < 0 and (g.mrr_p_value or 1) < cfg.alpha)
             or (g.ndcg_gain < 0 and (g.ndcg_p_value or 1) < cfg.alpha))
    out = {"checked": True, "reranker": rr_alias.version_id, "retriever": ret_alias.version_id,
           "alone": alone.summary(), "with_reranker": with_rr.summary(), "mrr_gain": g.mrr_gain,
           "ndcg_gain": g.ndcg_gain, "disabled": bool(hurts)}
    if hurts:
        reason = (f"reranker lowers retriever {ret_alias.version_id}: MRR {alone.mrr:.4f} -> {with_rr.mrr:.4f}, "
                  f"nDCG@10 {alone.ndcg10:.4f} -> {with_rr.ndcg10:.4f}")
        reg.delete_alias("reranker:champion")
        reg.reject(rr_alias.version_id, reason=reason)
        out["reason"] = reason
    return out


def _paired_drop(current: tuple[float, ...], previous: tuple[float, ...]) -> tuple[float, float]:
    from tuneloop.evaluate.gate import paired_bootstrap

    diff, p = paired_bootstrap(previous, current)
    return diff, p


# ---------------------------------------------------------------- mining
def mine_hard_negatives(db: Database, version: str, rows: list[dict[str, Any]], *, per_row: int = 3,
                        skip_top: int = 0, pool: int = 20) -> list[dict[str, Any]]:
    """Add ``negatives`` to (query, positive) rows: the index's top documents that are not a positive.

    Any text that is a positive of the same query is never a negative.
    """
    if per_row == 0 or not rows:
        return rows
    index, embedder = _served(db, version)
    from tuneloop.retrieval.documents import DocumentStore

    positives: dict[str, set[str]] = {}
    for r in rows:
        positives.setdefault(r["query"], set()).add(r["positive"])
    queries = list(positives)
    hits = index.search(np.asarray(embedder.encode(queries), np.float32), pool + skip_top)
    texts = {d["id"]: d["text"] for d in DocumentStore(db).rows({i for h in hits for i, _ in h}, ("id", "text"))}
    mined = {q: [texts[i] for i, _ in h[skip_top:] if i in texts and texts[i] not in positives[q]]
             for q, h in zip(queries, hits)}
    out = []
    for r in rows:
        have = list(r.get("negatives") or ([r["negative"]] if r.get("negative") else []))
        extra = [t for t in mined[r["query"]] if t not in have][:per_row]
        out.append({"query": r["query"], "positive": r["positive"], "negative": have + extra})
    return out


def _read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def _dataset(db: Database, kind: str, out: Path, cfg: RetrievalCycleConfig):
    from tuneloop.datasets.generator import DataGeneratorConfig, TrainingDataGenerator

    gen_cfg = DataGeneratorConfig(kind=kind, min_quality_score=None, min_user_feedback=None, since=cfg.since,
                                  near_dedup_threshold=None, golden_set=cfg.golden_set, llamafactory_info=False,
                                  show_progress=cfg.show_progress)
    return TrainingDataGenerator(db, gen_cfg).generate(out)


def _train(db: Database, trainer: Any, data: Path, out: Path, base: str | None, dataset_id: str | None,
           cfg: RetrievalCycleConfig):
    from tuneloop.train.runner import TrainingRunner

    runner = TrainingRunner(db, num_threads=cfg.num_threads, timeout_s=cfg.timeout_s, show_progress=cfg.show_progress)
    return runner.run(trainer, data, out, base, dataset_id=dataset_id)


def _record_eval(db: Database, cand: VersionEval, champ: VersionEval | None, gate: RetrievalGate,
                 cfg: RetrievalCycleConfig) -> str:
    from tuneloop.evaluate.golden import current_version

    eid = new_id()
    with db.begin() as conn:
        # results stay None: per-example rows feed the generator's golden-divergence monitor.
        conn.execute(schema.eval_runs.insert().values(
            id=eid, version_id=cand.version, baseline_id=champ.version if champ else None, golden_set=cfg.golden_set,
            golden_version=current_version(db, cfg.golden_set), n=cand.n, pass_rate=cand.hit_rate.get(cfg.k),
            metrics={"candidate": cand.summary(), "champion": champ.summary() if champ else None},
            gate=gate.to_dict(), passed=gate.passed, results=None, created_at=now()))
    return eid


# ---------------------------------------------------------------- retriever
def _triplet_rows(triplets_path: str, relevance_path: str | None) -> list[dict[str, Any]]:
    """Logged triplets, plus (query, positive) pairs that have no logged negative.

    The triplets builder needs a skipped document per positive, so a search whose first
    result was the one used gives none; its positive still teaches, with negatives mined
    from the index (the reranker builder keeps those positives).
    """
    rows = _read_jsonl(triplets_path)
    have = {(r["query"], r["positive"]) for r in rows}
    for r in _read_jsonl(relevance_path) if relevance_path else []:
        if float(r["score"]) > 0 and (r["query"], r["doc"]) not in have:
            have.add((r["query"], r["doc"]))
            rows.append({"query": r["query"], "positive": r["doc"]})
    return rows


def _retriever_cycle(db: Database, cfg: RetrievalCycleConfig, champ: Any, golden: list) -> ComponentResult:
    from tuneloop.train.retriever import RetrieverTrainer

    run_dir = Path(cfg.output_dir).expanduser() / f"retriever-{new_id()[-12:]}"
    ds = _dataset(db, "triplets", run_dir / "triplets.jsonl", cfg)
    pairs_ds = _dataset(db, "reranker", run_dir / "relevance.jsonl", cfg)
    rows = _triplet_rows(ds.path, pairs_ds.path if pairs_ds.final_count else None)
    if len(rows) < cfg.min_triplets:
        return ComponentResult("retriever", "skipped", f"{len(rows)} triplets < min_triplets {cfg.min_triplets}",
                               dataset_id=ds.dataset_id)
    rows = mine_hard_negatives(db, champ.id, rows, per_row=cfg.hard_negatives, skip_top=cfg.mine_skip_top)
    data = _write_jsonl(run_dir / "triplets.mined.jsonl", rows)
    result = _train(db, RetrieverTrainer(cfg.retriever), data, run_dir / "train", champ.model_path, ds.dataset_id, cfg)
    version = _registry(db).register(
        f"retriever-{new_id()[-12:]}", kind="retriever", backend="local", base_model=BASE_RETRIEVER,
        model_path=result.model_path, parent_id=champ.id, dataset_id=ds.dataset_id, train_run_id=result.run_id,
        metrics=result.metrics, lineage={"parent": champ.id, "dataset_id": ds.dataset_id, "train_run_id": result.run_id,
                                         "relevance_dataset_id": pairs_ds.dataset_id, "triplets": len(rows),
                                         "mined_negatives_per_row": cfg.hard_negatives,
                                         "base_model": champ.model_path or BASE_RETRIEVER})
    build = reembed(db, version.id, root=cfg.index_root, engine=cfg.engine, progress=cfg.show_progress,
                    num_threads=cfg.num_threads, max_docs_per_s=cfg.max_docs_per_s)
    cand, base = evaluate_version(db, version.id, golden, k=cfg.k), evaluate_version(db, champ.id, golden, k=cfg.k)
    gate = gate_versions(cand, base, min_gain=cfg.min_gain, alpha=cfg.alpha)
    _record_eval(db, cand, base, gate, cfg)
    common = dict(version_id=version.id, dataset_id=ds.dataset_id, train_run_id=result.run_id, build_id=build.id,
                  gate=gate.to_dict(), metrics=result.metrics)
    if gate.passed:
        promote_retriever(db, version.id, reason=gate.reason)
        return ComponentResult("retriever", "promoted", gate.reason, **common)
    _registry(db).reject(version.id, reason=gate.reason)
    B.retire_build(db, build.id)
    return ComponentResult("retriever", "rejected", gate.reason, **common)


# ---------------------------------------------------------------- reranker
def _reranker_rows(db: Database, version: str, path: str, cfg: RetrievalCycleConfig) -> list[dict[str, Any]]:
    rows = _read_jsonl(path)
    pairs = [{"query": r["query"], "positive": r["doc"]} for r in rows if float(r["score"]) > 0]
    mined = mine_hard_negatives(db, version, pairs, per_row=cfg.hard_negatives, skip_top=cfg.mine_skip_top)
    seen = {(r["query"], r["doc"]) for r in rows}
    for m in mined:
        for neg in m["negative"]:
            if (m["query"], neg) not in seen:
                seen.add((m["query"], neg))
                rows.append({"query": m["query"], "doc": neg, "score": 0.0})
    return rows


def _reranker_cycle(db: Database, cfg: RetrievalCycleConfig, champ: Any, golden: list) -> ComponentResult:
    from tuneloop.train.reranker import RerankerTrainer

    reg = _registry(db)
    current = reg.champion("reranker")
    run_dir = Path(cfg.output_dir).expanduser() / f"reranker-{new_id()[-12:]}"
    ds = _dataset(db, "reranker", run_dir / "reranker.jsonl", cfg)
    rows = _reranker_rows(db, champ.id, ds.path, cfg) if ds.final_count else []
    if len(rows) < cfg.min_reranker_rows:
        return ComponentResult("reranker", "skipped", f"{len(rows)} rows < min_reranker_rows {cfg.min_reranker_rows}",
                               dataset_id=ds.dataset_id)
    data = _write_jsonl(run_dir / "reranker.mined.jsonl", rows)
    base = current.model_path if current else None
    result = _train(db, RerankerTrainer(cfg.reranker), data, run_dir / "train", base, ds.dataset_id, cfg)
    version = reg.register(
        f"reranker-{new_id()[-12:]}", kind="reranker", backend="local", base_model=BASE_RETRIEVER,
        params={"fusion": cfg.rerank_fusion},
        model_path=result.model_path, parent_id=current.id if current else None, dataset_id=ds.dataset_id,
        train_run_id=result.run_id, metrics=result.metrics,
        lineage={"parent": current.id if current else None, "dataset_id": ds.dataset_id, "rows": len(rows),
                 "train_run_id": result.run_id, "retriever": champ.id})
    kw = dict(k=cfg.k, candidates=cfg.rerank_candidates)
    cand = evaluate_version(db, champ.id, golden, reranker=version.id, **kw)
    base_eval = evaluate_version(db, champ.id, golden, reranker=current.id if current else None, **kw)
    gate = gate_versions(cand, base_eval, min_gain=cfg.min_gain, alpha=cfg.alpha)
    _record_eval(db, cand, base_eval, gate, cfg)
    common = dict(version_id=version.id, dataset_id=ds.dataset_id, train_run_id=result.run_id,
                  gate=gate.to_dict(), metrics=result.metrics)
    if gate.passed:
        reg.promote(version.id, reason=gate.reason)
        return ComponentResult("reranker", "promoted", gate.reason, **common)
    reg.reject(version.id, reason=gate.reason)
    return ComponentResult("reranker", "rejected", gate.reason, **common)


def retrieval_cycle(db: Database, config: RetrievalCycleConfig | dict | None = None) -> RetrievalCycleResult:
    """One cycle: guardrail, then retriever and reranker training, each gated (see the module doc)."""
    cfg = config if isinstance(config, RetrievalCycleConfig) else RetrievalCycleConfig(**(config or {}))
    if cfg.num_threads:
        import torch

        torch.set_num_threads(cfg.num_threads)
    champ = _ensure_champion(db, cfg)
    guard = retrieval_guardrail(db, cfg)
    champ = _registry(db).champion("retriever")
    attach_pending(db, since=cfg.since)
    golden = load_golden(db, cfg.golden_set)
    results: list[ComponentResult] = []
    guard["reranker"] = reranker_guardrail(db, cfg, golden)  # a rollback above may have changed the retriever
    for component in cfg.components:
        if not golden:
            results.append(ComponentResult(component, "skipped", f"golden set {cfg.golden_set!r} has no cases"))
            continue
        run = _retriever_cycle if component == "retriever" else _reranker_cycle
        try:
            results.append(run(db, cfg, champ, golden))
        except ConflictError as exc:
            results.append(ComponentResult(component, "skipped", exc.message))
        if results[-1].component == "retriever" and results[-1].decision == "promoted":
            guard["reranker_after_retriever"] = reranker_guardrail(db, cfg, golden)
        champ = _registry(db).champion("retriever")  # the reranker is gated on the newest retriever
    return RetrievalCycleResult(guard, tuple(results))
