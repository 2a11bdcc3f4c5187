"""Retrieval monitoring (seed 001): hit rate, reranker score drift, embedding-norm drift, and
the mean cosine of new queries to historical ones — one ``drift_reports`` row of kind ``retrieval``.

The current window is compared with the reference window before it:

- ``retrieval_hit_rate_drop``: share of searches with at least one used/clicked document
  (:func:`tuneloop.monitor.operations.operations_drift`'s two-proportion check);
- ``reranker_score_ks`` / ``retriever_score_ks``: KS test of the rank-1 scores of reranked
  and of plain searches (a reranker whose scores shift is seeing different data);
- ``embedding_norm``: relative shift of the mean *un-normalised* query embedding length
  (:func:`tuneloop.monitor.drift.norm_drift`; after L2 normalisation every norm is 1, so the
  pooled vector before normalisation is measured where the embedder exposes it);
- ``query_similarity``: drop of the mean max-cosine of current queries to reference queries
  (:func:`tuneloop.monitor.drift.nn_similarity_drift`): new topics the corpus may not cover.

The loop can use the report as a trigger (:func:`tuneloop.monitor.reports.latest_drift` with
``kind="retrieval"``).

>>> rows = [{"doc_ids": ["a", "b"], "scores": [0.9, 0.3], "meta": {"clicked": ["b"]}}]
>>> as_interaction_rows(rows)[0]["meta"]["retrieval"]["docs"][1]["clicked"]
True
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import sqlalchemy as sa

from tuneloop.ids import now
from tuneloop.monitor.drift import nn_similarity_drift, norm_drift
from tuneloop.monitor.operations import OperationsThresholds, operations_drift, retrieval_stats
from tuneloop.monitor.reports import Window, windows_before, write_drift_report
from tuneloop.store import Database, schema

__all__ = ["retrieval_monitor_report", "as_interaction_rows", "raw_query_vectors"]


def as_interaction_rows(logs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Retrieval log rows in the ``meta["retrieval"]`` shape the operations monitors read."""
    out = []
    for log in logs:
        meta = log.get("meta") or {}
        flags = {k: set(meta.get(k) or ()) for k in ("used", "clicked", "skipped")}
        docs = [{"id": d, "rank": i, "score": s, **{k: d in v for k, v in flags.items()}}
                for i, (d, s) in enumerate(zip(log.get("doc_ids") or [], log.get("scores") or []), 1)]
        out.append({"meta": {"retrieval": {"docs": docs}}})
    return out


def _logs(db: Database, window: Window) -> list[dict[str, Any]]:
    L = schema.retrieval_logs
    return db.fetch_all(sa.select(L.c.query, L.c.doc_ids, L.c.scores, L.c.meta, L.c.reranker_version)
                        .where(L.c.ts >= window.start, L.c.ts < window.end))


def raw_query_vectors(embedder: Any, texts: list[str]) -> np.ndarray:
    """Mean-pooled vectors *before* L2 normalisation when the embedder exposes its model (MiniLM)."""
    model, tok = getattr(embedder, "model", None), getattr(embedder, "tokenizer", None)
    if model is None or tok is None:
        return np.asarray(embedder.encode(texts), dtype=np.float32)
    import torch

    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), 64):
            enc = tok(texts[i:i + 64], padding=True, truncation=True, max_length=256, return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)).float().numpy())
    return np.concatenate(out) if out else np.zeros((0, 1), np.float32)


def _checks(ref: list[dict], cur: list[dict], th: OperationsThresholds) -> dict[str, dict[str, Any]]:
    wanted = {"retrieval_hit_rate_drop": "retrieval_hit_rate_drop", "retrieval_score_ks": "score_ks"}
    drift = operations_drift(as_interaction_rows(ref), as_interaction_rows(cur), th)
    return {wanted[c.name]: dataclasses.asdict(c) for c in drift.checks if c.name in wanted}


def _embedding_checks(embedder: Any, ref_q: list[str], cur_q: list[str], min_rows: int) -> dict[str, Any]:
    if min(len(ref_q), len(cur_q)) < min_rows:
        return {"skipped": f"fewer than {min_rows} queries in a window"}
    ref, cur = raw_query_vectors(embedder, ref_q), raw_query_vectors(embedder, cur_q)
    out = {}
    for name, res in (("embedding_norm", norm_drift(ref, cur)), ("query_similarity", nn_similarity_drift(ref, cur))):
        out[name] = {"value": res.value, "threshold": res.threshold, "drifted": res.drifted, "p_value": res.p_value,
                     "details": res.details}
    return out


def retrieval_monitor_report(db: Database, *, embedder: Any = None, end: float | None = None,
                             reference_days: float = 7, current_days: float = 1, max_queries: int = 2000,
                             thresholds: OperationsThresholds | None = None,
                             write: bool = True) -> tuple[str | None, dict[str, Any]]:
    """Compare the current window of retrieval logs with the reference window; store the report.

    ``embedder`` (an Embedder, a version name, or None for the serving one) embeds queries
    for the norm and similarity checks.
    """
    th = thresholds or OperationsThresholds()
    reference, current = windows_before(now() if end is None else end, reference_days, current_days)
    ref, cur = _logs(db, reference), _logs(db, current)
    reranked = [r for r in ref if r["reranker_version"]], [r for r in cur if r["reranker_version"]]
    plain = [r for r in ref if not r["reranker_version"]], [r for r in cur if not r["reranker_version"]]
    checks = _checks(ref, cur, th)
    checks["reranker_score_ks"] = _checks(*reranked, th)["score_ks"]
    checks["retriever_score_ks"] = _checks(*plain, th)["score_ks"]
    del checks["score_ks"]
    emb = _resolve_embedder(db, embedder)
    rng = np.random.default_rng(0)
    sample = lambda rows: [rows[i]["query"] for i in rng.permutation(len(rows))[:max_queries]]  # noqa: E731
    checks |= _embedding_checks(emb, sample(ref), sample(cur), th.min_rows) if emb is not None else {}
    stats = {name: {k: v for k, v in dataclasses.asdict(retrieval_stats(as_interaction_rows(rows))).items()
                    if k != "top_scores"} for name, rows in (("reference", ref), ("current", cur))}
    drifted = any(isinstance(c, Mapping) and c.get("drifted") for c in checks.values())
    metrics = {"checks": checks, "stats": stats,
               "embedder": getattr(emb, "version", getattr(emb, "name", None)) if emb is not None else None}
    window = {"reference": reference.to_dict() | {"n": len(ref)}, "current": current.to_dict() | {"n": len(cur)}}
    report_id = write_drift_report(db, "retrieval", window, metrics, drifted) if write else None
    return report_id, metrics | {"drifted": drifted}


def _resolve_embedder(db: Database, embedder: Any) -> Any:
    from tuneloop.retrieval.builds import active_build
    from tuneloop.retrieval.versions import load_embedder

    if embedder is not None:
        return load_embedder(db, embedder)
    build = active_build(db)
    return load_embedder(db, build.embedder_version) if build is not None else None
