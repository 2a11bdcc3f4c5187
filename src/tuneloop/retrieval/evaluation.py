"""Offline and online evaluation of retriever and reranker versions.

**Golden set.** Retrieval cases live in the golden store (set ``retrieval`` by default):
``prompt`` is the query, ``expected`` the relevant document ids as JSON — a list
(``["d1", "d7"]``, gain 1 each) or an object of graded gains (``{"d1": 2, "d7": 1}``).
They are versioned and reviewed like every golden case; :func:`add_golden` writes them.

**Offline gate** (:func:`evaluate_versions`, :func:`gate_versions`): each version ranks every
golden query with its own index (and reranker); MRR, nDCG@10 and hit rate@k come from
:func:`tuneloop.evaluate.retrieval_metrics.retrieval_report`; the candidate is compared
with the champion on the same queries by a paired bootstrap of the per-query reciprocal
rank (:func:`tuneloop.evaluate.gate.paired_bootstrap`). It passes when its MRR gain is at
least ``min_gain`` and no significant regression shows in MRR or nDCG@10.

**Online** (:func:`click_through`): per retriever/reranker version, from the retrieval logs
and the clients' reports: hit rate (a search with at least one used or clicked document),
MRR of the first used/clicked document; two versions compared by a two-proportion z-test.

>>> case = RetrievalCase("reset password", {"d1": 1.0})
>>> case.relevant
{'d1': 1.0}
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa

from tuneloop.errors import ConflictError, ValidationError
from tuneloop.evaluate.gate import paired_bootstrap
from tuneloop.evaluate.retrieval_metrics import ndcg_at_k, reciprocal_rank, retrieval_report
from tuneloop.retrieval import builds as B
from tuneloop.retrieval.index import EmbeddedIndex
from tuneloop.retrieval.reembed import catch_up
from tuneloop.retrieval.versions import load_embedder, load_reranker, rerank_order
from tuneloop.store import Database, schema

__all__ = ["RetrievalCase", "VersionEval", "RetrievalGate", "add_golden", "load_golden", "rank_with",
           "evaluate_version", "gate_versions", "click_through", "GOLDEN_SET"]

GOLDEN_SET = "retrieval"


@dataclass(frozen=True)
class RetrievalCase:
    """One golden query and its relevant documents (id -> gain)."""

    query: str
    relevant: Mapping[str, float]
    id: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.query, str) or not self.query.strip():
            raise ValidationError("a retrieval case needs a non-empty query", field="query")
        if not self.relevant:
            raise ValidationError(f"retrieval case {self.query!r} names no relevant document", field="relevant")


def _relevant(value: Any, where: str) -> dict[str, float]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = [value]  # a bare id
    if isinstance(value, Mapping):
        return {str(k): float(v) for k, v in value.items()}
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return {v: 1.0 for v in value}
    raise ValidationError(f"{where}: relevant documents must be a list of ids or an object id -> gain",
                          field="expected")


def add_golden(db: Database, cases: Iterable[RetrievalCase | Mapping[str, Any]], *, set_name: str = GOLDEN_SET,
               actor: str = "retrieval") -> int:
    """Store cases (``RetrievalCase`` or ``{"query", "relevant"}``) in the golden set; returns how many."""
    from tuneloop.evaluate.golden import add_example

    n = 0
    for i, c in enumerate(cases):
        case = c if isinstance(c, RetrievalCase) else RetrievalCase(c["query"], _relevant(c["relevant"], f"cases[{i}]"))
        add_example(db, prompt=case.query, expected=json.dumps(dict(case.relevant), sort_keys=True),
                    tags=("retrieval",), set_name=set_name, actor=actor)
        n += 1
    return n


def load_golden(db: Database, set_name: str = GOLDEN_SET) -> list[RetrievalCase]:
    """The approved retrieval cases of ``set_name``."""
    from tuneloop.evaluate.golden import list_examples

    return [RetrievalCase(ex.prompt, _relevant(ex.expected, f"golden {ex.id}"), ex.id)
            for ex in list_examples(db, set_name)]


def _served(db: Database, version: str) -> tuple[EmbeddedIndex, Any]:
    build = B.find_build(db, version)
    if build is None:
        raise ConflictError(f"retriever {version!r} has no ready index; re-embed the corpus first",
                            embedder_version=version)
    embedder = load_embedder(db, version)
    index = EmbeddedIndex.load(build.path)
    catch_up(db, index, embedder)  # documents changed since the snapshot
    return index, embedder


def rank_with(db: Database, version: str, queries: Sequence[str], k: int = 10, *, reranker: Any = None,
              candidates: int = 30) -> list[list[str]]:
    """Document ids each query gets from retriever ``version`` (reranked when ``reranker``)."""
    index, embedder = _served(db, version)
    vectors = np.asarray(embedder.encode(list(queries)), dtype=np.float32)
    pools = index.search(vectors, max(k, candidates if reranker is not None else k))
    if reranker is None:
        return [[i for i, _ in pool[:k]] for pool in pools]
    rr = load_reranker(db, reranker)
    D = schema.documents
    out = []
    for query, pool in zip(queries, pools):
        ids = [i for i, _ in pool]
        texts = {r["id"]: r["text"] for r in db.fetch_all(sa.select(D.c.id, D.c.text).where(D.c.id.in_(ids)))}
        ids = [i for i in ids if i in texts]  # still in the retriever's order
        scores = rr.score(query, [texts[i] for i in ids]) if ids else []
        out.append([ids[j] for j in rerank_order(scores, getattr(rr, "fusion", "none"))][:k])
    return out


@dataclass(frozen=True)
class VersionEval:
    """One version on one golden set: means, and the per-query values the paired test needs."""

    version: str
    reranker: str | None
    n: int
    mrr: float
    ndcg10: float
    hit_rate: dict[int, float]
    reciprocal_ranks: tuple[float, ...]
    ndcgs: tuple[float, ...]

    def summary(self) -> dict[str, Any]:
        return {"version": self.version, "reranker": self.reranker, "n": self.n, "mrr": self.mrr,
                "ndcg@10": self.ndcg10, "hit_rate": dict(self.hit_rate)}


def evaluate_version(db: Database, version: str, cases: Sequence[RetrievalCase], *, k: int = 10,
                     reranker: Any = None, candidates: int = 30) -> VersionEval:
    """MRR@k, nDCG@10 and hit rate@1/5/10 of ``version`` (plus ``reranker``) on ``cases``."""
    if not cases:
        raise ValidationError("the retrieval golden set is empty: add cases with add_golden()", field="golden")
    rankings = rank_with(db, version, [c.query for c in cases], k, reranker=reranker, candidates=candidates)
    rels = [dict(c.relevant) for c in cases]
    rep = retrieval_report(rankings, rels, ks=(1, 5, 10))
    rr = tuple(reciprocal_rank(r, rel, k=k) for r, rel in zip(rankings, rels))
    nd = tuple(ndcg_at_k(r, rel, k=10) for r, rel in zip(rankings, rels))
    name = getattr(load_reranker(db, reranker), "name", None) if reranker is not None else None
    return VersionEval(version, name, rep.n, float(np.mean(rr)), float(np.mean(nd)), dict(rep.hit_rate), rr, nd)


@dataclass(frozen=True)
class RetrievalGate:
    """Candidate vs champion on one golden set. On failure ``metric``/``value``/``threshold`` say why."""

    passed: bool
    candidate: dict[str, Any]
    champion: dict[str, Any] | None
    mrr_gain: float
    mrr_p_value: float | None
    ndcg_gain: float
    ndcg_p_value: float | None
    metric: str
    value: float
    threshold: float
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def gate_versions(candidate: VersionEval, champion: VersionEval | None, *, min_gain: float = 0.0,
                  alpha: float = 0.05, min_mrr: float = 0.0, seed: int = 0) -> RetrievalGate:
    """Pass when MRR >= ``min_mrr``, the MRR gain >= ``min_gain`` and nothing regresses significantly."""
    cand = candidate.summary()
    if candidate.mrr < min_mrr:
        return RetrievalGate(False, cand, None, 0.0, None, 0.0, None, "mrr", candidate.mrr, min_mrr,
                             f"MRR {candidate.mrr:.4f} is below the floor {min_mrr:.4f}")
    if champion is None:
        return RetrievalGate(True, cand, None, 0.0, None, 0.0, None, "mrr", candidate.mrr, min_mrr, "no champion")
    if candidate.n != champion.n:
        raise ValidationError("candidate and champion were scored on different golden sets", field="golden")
    gain, p = paired_bootstrap(candidate.reciprocal_ranks, champion.reciprocal_ranks, seed=seed)
    ngain, np_ = paired_bootstrap(candidate.ndcgs, champion.ndcgs, seed=seed)
    champ = champion.summary()
    if (gain < 0 and p < alpha) or (ngain < 0 and np_ < alpha):
        metric, value = ("mrr_gain", gain) if gain < 0 and p < alpha else ("ndcg10_gain", ngain)
        return RetrievalGate(False, cand, champ, gain, p, ngain, np_, metric, value, 0.0,
                             f"significant regression: {metric} {value:+.4f} (p < {alpha})")
    if gain < min_gain:
        return RetrievalGate(False, cand, champ, gain, p, ngain, np_, "mrr_gain", gain, min_gain,
                             f"MRR gain {gain:+.4f} is below {min_gain:+.4f}")
    return RetrievalGate(True, cand, champ, gain, p, ngain, np_, "mrr_gain", gain, min_gain,
                         f"MRR {champion.mrr:.4f} -> {candidate.mrr:.4f} (p = {p:.4g})")


# ---------------------------------------------------------------- online
def _log_rows(db: Database, since: float | None, until: float | None) -> list[dict[str, Any]]:
    L = schema.retrieval_logs
    stmt = sa.select(L.c.retriever_version, L.c.reranker_version, L.c.doc_ids, L.c.scores, L.c.meta, L.c.ts)
    if since is not None:
        stmt = stmt.where(L.c.ts >= since)
    if until is not None:
        stmt = stmt.where(L.c.ts < until)
    return db.fetch_all(stmt)


def click_through(db: Database, *, since: float | None = None, until: float | None = None,
                  reported_only: bool = True, by: str = "retriever_version") -> dict[str, dict[str, float]]:
    """Per version (``by``: ``retriever_version`` or ``reranker_version``): searches, hit rate, MRR.

    ``reported_only`` counts only searches a client reported on (used/clicked/skipped), so
    clients that never report do not read as misses.
    """
    if by not in ("retriever_version", "reranker_version"):
        raise ValidationError("by must be retriever_version or reranker_version", field="by")
    stats: dict[str, list[float]] = {}
    for row in _log_rows(db, since, until):
        meta = row["meta"] or {}
        if reported_only and "reported_at" not in meta:
            continue
        good = set(meta.get("used") or ()) | set(meta.get("clicked") or ())
        ranks = [i for i, d in enumerate(row["doc_ids"] or [], 1) if d in good]
        s = stats.setdefault(str(row[by]), [0, 0, 0.0])
        s[0] += 1
        s[1] += bool(ranks)
        s[2] += 1.0 / ranks[0] if ranks else 0.0
    return {v: {"searches": n, "hits": h, "hit_rate": h / n, "mrr": rr / n} for v, (n, h, rr) in stats.items()}


def compare_click_through(db: Database, control: str, treatment: str, **kw: Any) -> dict[str, Any]:
    """Hit rate of ``treatment`` against ``control`` (two-proportion z-test, two-sided)."""
    from tuneloop.experiments.stats import two_proportion_ztest

    ct = click_through(db, **kw)
    a, b = ct.get(control), ct.get(treatment)
    if not a or not b:
        raise ValidationError(f"no reported searches for {control if not a else treatment!r}", field="version")
    test = two_proportion_ztest(int(a["hits"]), int(a["searches"]), int(b["hits"]), int(b["searches"]))
    return {"control": a, "treatment": b, "diff": test.estimate, "p_value": test.p_value}
