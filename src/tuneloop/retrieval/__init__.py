"""tuneloop.retrieval: documents, vector indexes per embedder version, search, logs, learning.

    RetrievalIndex            the SDK: upsert / delete / search / feedback / switch / rollback (search.py)
    DocumentStore, Document   documents in the main database, content hash, soft delete (documents.py)
    VectorIndex, EmbeddedIndex  the index protocol and the embedded default (index.py)
    reembed, start_reembed    resumable, throttled re-embedding into a new index (reembed.py)
    switch_to, rollback_index which build serves; instant rollback (builds.py)
    log_retrieval, record_feedback, attach_pending   retrieval logs and client reports (logs.py)
    retrieval_monitor_report  hit rate, score drift, embedding drift -> drift_reports (monitor.py)
    retrieval_cycle           retriever + reranker learning with golden gates and guardrail (cycle.py)
    add_golden, evaluate_version, gate_versions, click_through   evaluation (evaluation.py)

    augment                   retrieval-augmented prompts for the gateway (rag.py)

The HTTP routes are in :mod:`tuneloop.retrieval.api`; the CLI in :mod:`tuneloop.retrieval.commands`.
Names load lazily, so ``import tuneloop.retrieval`` imports neither numpy nor torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "RetrievalIndex": "search", "RetrievalResult": "search", "Hit": "search",
    "Document": "documents", "DocumentStore": "documents", "UpsertResult": "documents",
    "load_documents": "documents", "content_hash": "documents",
    "VectorIndex": "index", "EmbeddedIndex": "index", "available_engines": "index",
    "reembed": "reembed", "start_reembed": "reembed", "catch_up": "reembed",
    "IndexBuild": "builds", "switch_to": "builds", "rollback_index": "builds", "active_build": "builds",
    "list_builds": "builds",
    "log_retrieval": "logs", "record_feedback": "logs", "attach_pending": "logs",
    "retrieval_monitor_report": "monitor",
    "RetrievalCycleConfig": "cycle", "RetrievalCycleResult": "cycle", "retrieval_cycle": "cycle",
    "retrieval_guardrail": "cycle", "promote_retriever": "cycle", "rollback_retriever": "cycle",
    "RetrievalCase": "evaluation", "add_golden": "evaluation", "load_golden": "evaluation",
    "evaluate_version": "evaluation", "gate_versions": "evaluation", "click_through": "evaluation",
    "Reranker": "versions", "CrossEncoderReranker": "versions", "load_embedder": "versions",
    "register_base_retriever": "versions", "use_embedder": "versions",
    "augment": "rag", "render_context": "rag",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"tuneloop.retrieval.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'tuneloop.retrieval' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
