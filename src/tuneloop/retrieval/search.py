"""``RetrievalIndex``: the retrieval SDK — upsert, delete, search (optionally reranked), feedback.

>>> from tuneloop.store import Database
>>> import tempfile
>>> index = RetrievalIndex(Database.open("sqlite:///:memory:"), embedder="hashing-256",
...                        root=tempfile.mkdtemp(), engine="numpy")
>>> _ = index.upsert([{"id": "pw", "text": "How to reset your password"},
...                   {"id": "ship", "text": "Shipping takes three days"}])
>>> result = index.search("reset my password", k=1)
>>> result.ids
['pw']
>>> _ = index.feedback(result.retrieval_id, clicked=["pw"])

How it stays correct while documents change, in this process and others:

- The database is the source of truth. ``upsert``/``delete`` write the ``documents``
  table, then embed only the documents whose text hash changed into the served index.
- Every ``refresh_s`` seconds a search first applies changes other processes made
  (rows with ``updated_at`` past the index's watermark) and follows a switch of the
  active build. Until then, every hit is checked against the table: a deleted document,
  or one whose text changed since it was embedded, is never returned.
- The index is saved as a snapshot every ``save_every`` changes or ``save_interval_s``
  seconds, and on :meth:`close`; whatever a crash loses is re-applied from the table.
- The build this one replaced stays loaded: :meth:`rollback` serves it at once.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from tuneloop.errors import ConflictError, NotFoundError, StoreError, ValidationError
from tuneloop.retrieval import builds as B
from tuneloop.retrieval.documents import Document, DocumentStore, UpsertResult
from tuneloop.retrieval.index import EmbeddedIndex
from tuneloop.retrieval.logs import log_retrieval, record_feedback
from tuneloop.retrieval.reembed import catch_up, reembed
from tuneloop.retrieval.versions import Reranker, load_embedder, load_reranker, rerank_order, version_name
from tuneloop.store import Database

__all__ = ["RetrievalIndex", "RetrievalResult", "Hit", "MAX_K"]

MAX_K = 1000


@dataclass(frozen=True)
class Hit:
    """One retrieved document. ``score`` is the reranker's when reranked, else the cosine.

    With a reranker whose ``fusion`` is ``rrf`` the order fuses both ranks, so ``score``
    (the cross-encoder's) need not fall with ``rank``."""

    id: str
    text: str
    score: float
    rank: int
    meta: Mapping[str, Any] = field(default_factory=dict)
    retriever_score: float | None = None


@dataclass(frozen=True)
class RetrievalResult:
    query: str
    hits: tuple[Hit, ...]
    retrieval_id: str | None
    interaction_id: str | None
    retriever_version: str
    reranker_version: str | None
    latency_ms: float

    @property
    def ids(self) -> list[str]:
        return [h.id for h in self.hits]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hits"] = [dict(asdict(h), meta=dict(h.meta)) for h in self.hits]
        return d


@dataclass
class _Served:
    build: B.IndexBuild
    index: EmbeddedIndex
    embedder: Any


class RetrievalIndex:
    """Documents plus the vector index that serves them, for one database.

    ``embedder`` pins a retriever version (a registered version id, an embedder name, or
    an Embedder object); by default the active build serves, and with no build yet the
    retriever champion's index is built on first use (with no champion, ``minilm-base`` —
    all-MiniLM-L6-v2 from its wheel — is registered and promoted first). ``reranker``:
    None, ``"champion"`` (follows the registry), a version id, a folder, or a Reranker.
    """

    def __init__(self, db: Database, *, embedder: Any = None, reranker: Any = None,
                 root: str | os.PathLike | None = None, engine: str = "auto", refresh_s: float = 1.0,
                 log: bool = True, save_every: int = 1000, save_interval_s: float = 30.0,
                 rerank_candidates: int = 30) -> None:
        self.db, self.store = db, DocumentStore(db)
        self.root, self.engine, self.refresh_s, self.log = root, engine, refresh_s, log
        self.save_every, self.save_interval_s, self.rerank_candidates = save_every, save_interval_s, rerank_candidates
        self._pinned = None if embedder is None else load_embedder(db, embedder)
        self._reranker_spec = reranker
        self._loaded: dict[str, _Served] = {}   # build id -> loaded index, newest use last
        self._active: str | None = None
        self._checked_at = 0.0
        self._saved_at = time.monotonic()
        self._lock = threading.RLock()

    # ------------------------------------------------------------ serving state
    def _target_build(self) -> B.IndexBuild:
        if self._pinned is not None:
            version = version_name(self._pinned)
            found = B.find_build(self.db, version)
            if found is None:
                found = reembed(self.db, self._pinned, root=self.root, engine=self.engine, progress=False,
                                num_threads=None, switch=B.active_build(self.db) is None)
            return found
        active = B.active_build(self.db)
        if active is None:
            from tuneloop.registry.versions import Registry
            from tuneloop.retrieval.versions import register_base_retriever

            # The default retriever is a registered version, so that learned ones have a parent.
            champ = Registry(self.db).champion("retriever") or register_base_retriever(self.db)
            active = reembed(self.db, champ.id, root=self.root, engine=self.engine, progress=False,
                             num_threads=None, switch=True)
        return active

    def _load(self, build: B.IndexBuild) -> _Served:
        served = self._loaded.pop(build.id, None)
        if served is None:
            if not build.path or not EmbeddedIndex.exists(build.path):
                raise StoreError(f"index build {build.id} ({build.embedder_version}) has no snapshot at "
                                 f"{build.path}; rebuild it with `tuneloop docs reembed`", build_id=build.id)
            pinned = self._pinned is not None and version_name(self._pinned) == build.embedder_version
            embedder = self._pinned if pinned else load_embedder(self.db, build.embedder_version)
            served = _Served(build, EmbeddedIndex.load(build.path), embedder)
        served.build = build
        self._loaded[build.id] = served
        while len(self._loaded) > 3:  # serving, the one a rollback returns to, an online challenger
            self._loaded.pop(next(iter(self._loaded))).index.flush()
        return served

    def _serve(self, force: bool = False) -> _Served:
        """The served build, refreshed when ``refresh_s`` has passed (or ``force``)."""
        if not force and self._active in self._loaded and time.monotonic() - self._checked_at < self.refresh_s:
            return self._loaded[self._active]
        with self._lock:
            build = self._target_build()
            served = self._load(build)
            catch_up(self.db, served.index, served.embedder)
            self._active, self._checked_at = build.id, time.monotonic()
            self._maybe_save(served)
            return served

    def _version(self, version: str) -> _Served:
        """A ready (not necessarily serving) build of ``version``: an online test's challenger arm."""
        name = version_name(load_embedder(self.db, version))
        with self._lock:
            loaded = next((s for s in self._loaded.values() if s.build.embedder_version == name), None)
            if loaded is not None and time.monotonic() - loaded.__dict__.get("checked", 0.0) < self.refresh_s:
                return loaded
            build = B.find_build(self.db, name)
            if build is None:
                raise ConflictError(f"no ready index for {version!r}: re-embed the corpus first",
                                    embedder_version=version)
            served = self._load(build)
            catch_up(self.db, served.index, served.embedder)
            served.__dict__["checked"] = time.monotonic()
            return served

    def refresh(self) -> B.IndexBuild:
        """Apply other processes' changes and follow a switch now; returns the served build."""
        return self._serve(force=True).build

    @property
    def version(self) -> str:
        """The retriever version that serves (the served build's embedder version)."""
        return self._serve().build.embedder_version

    @property
    def build(self) -> B.IndexBuild:
        return self._serve().build

    def _maybe_save(self, served: _Served) -> None:
        if served.index.dirty and (served.index.dirty >= self.save_every
                                   or time.monotonic() - self._saved_at >= self.save_interval_s):
            served.index.save()
            self._saved_at = time.monotonic()

    def _reranker(self, rerank: bool | None) -> Reranker | None:
        """The reranker to use: none when ``rerank`` is False; the registry's champion when
        ``rerank`` is True and no reranker was set; else the one set (when set)."""
        if rerank is False:
            return None
        spec = self._reranker_spec
        if spec is None:
            if not rerank:
                return None
            spec = "champion"
        try:
            return load_reranker(self.db, spec)
        except NotFoundError:
            if spec in ("champion", "reranker:champion"):
                return None  # following the registry, and no reranker serves now: results say so
            raise

    # ------------------------------------------------------------ writes
    def upsert(self, docs: Iterable[Document | Mapping[str, Any]], *, batch_size: int = 256,
               progress: bool = False) -> UpsertResult:
        """Add or update documents (``{"id", "text", "meta"?}``); only changed texts are embedded."""
        docs = list(docs)
        served = self._serve()
        result = UpsertResult()
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(docs), desc="upsert", unit="doc", dynamic_ncols=True)
        try:
            for i in range(0, len(docs), batch_size):
                part = self.store.upsert(docs[i:i + batch_size])
                self._embed_into(served, part.to_embed)
                result = UpsertResult(*(a + b for a, b in zip(
                    (result.added, result.updated, result.meta_only, result.unchanged),
                    (part.added, part.updated, part.meta_only, part.unchanged))))
                if bar is not None:
                    bar.update(len(docs[i:i + batch_size]))
        finally:
            if bar is not None:
                bar.close()
        self._maybe_save(served)
        return result

    def _embed_into(self, served: _Served, ids: Sequence[str]) -> None:
        if not ids:
            return
        rows = self.store.rows(ids)
        vectors = np.asarray(served.embedder.encode([r["text"] for r in rows]), dtype=np.float32)
        served.index.upsert([r["id"] for r in rows], vectors, [r["content_hash"] for r in rows])

    def delete(self, ids: Iterable[str]) -> tuple[str, ...]:
        """Delete documents; returns the ids that existed. They are never returned again."""
        ids = [ids] if isinstance(ids, str) else list(ids)
        deleted = self.store.delete(ids)
        served = self._serve()
        served.index.delete(list(deleted))
        self._maybe_save(served)
        return deleted

    def get(self, doc_id: str) -> Document:
        return self.store.get(doc_id)

    def __len__(self) -> int:
        return self.store.count()

    # ------------------------------------------------------------ search
    def search(self, query: str, k: int = 10, *, interaction_id: str | None = None, rerank: bool | None = None,
               candidates: int | None = None, filter: Mapping[str, Any] | None = None,
               log: bool | None = None, version: str | None = None) -> RetrievalResult:
        """The ``k`` documents nearest to ``query``, best first, logged against ``interaction_id``.

        ``rerank`` (default: when a reranker is set) rescores ``candidates`` (default
        ``rerank_candidates``) retrieved documents with the cross-encoder. ``filter`` keeps
        documents whose ``meta`` has every given key/value. ``version`` searches another
        retriever version's ready index instead of the serving one (an online test's arm;
        the log records which version answered, for :func:`~.evaluation.click_through`).
        """
        t0 = time.perf_counter()
        _check_query(query, k)
        served = self._serve() if version is None else self._version(version)
        reranker = self._reranker(rerank)
        want = max(k, candidates or (self.rerank_candidates if reranker is not None else k))
        pool = self._candidates(served, query, want, filter)
        hits = self._rank(query, pool[:want], reranker)[:k]
        rr_name = getattr(reranker, "name", None) if reranker is not None else None
        retrieval_id = None
        if self.log if log is None else log:
            retrieval_id = log_retrieval(self.db, query, [(h.id, h.text, h.score) for h in hits],
                                         retriever_version=served.build.embedder_version, reranker_version=rr_name,
                                         interaction_id=interaction_id,
                                         meta={"k": k, "build_id": served.build.id, "filter": dict(filter or {})})
        return RetrievalResult(query, tuple(hits), retrieval_id, interaction_id, served.build.embedder_version,
                               rr_name, (time.perf_counter() - t0) * 1000)

    def _candidates(self, served: _Served, query: str, want: int,
                    filter: Mapping[str, Any] | None) -> list[tuple[dict[str, Any], float]]:
        """Nearest live documents whose text is what was embedded (and that match ``filter``)."""
        qv = np.asarray(served.embedder.encode([query]), dtype=np.float32)
        fetch = min(MAX_K * 2, (want * 10 if filter else want) + 10)
        while True:
            pairs = served.index.search(qv, fetch)[0]
            rows = {r["id"]: r for r in self.store.rows([i for i, _ in pairs], ("id", "text", "meta", "content_hash"))}
            indexed = served.index.content_hashes([i for i, _ in pairs])
            out, stale = [], False
            for doc_id, score in pairs:
                row = rows.get(doc_id)
                if row is None or row["content_hash"] != indexed.get(doc_id):
                    stale = True  # deleted or changed by another process since: refresh soon
                    continue
                if filter and any((row["meta"] or {}).get(key) != v for key, v in filter.items()):
                    continue
                out.append((row, score))
            if stale:
                self._checked_at = 0.0
            if len(out) >= want or len(pairs) < fetch or fetch >= MAX_K * 2:
                return out
            fetch = min(MAX_K * 2, fetch * 4)

    def _rank(self, query: str, pool: list[tuple[dict[str, Any], float]], reranker: Reranker | None) -> list[Hit]:
        if reranker is not None and pool:
            scores = np.asarray(reranker.score(query, [r["text"] for r, _ in pool]), dtype=np.float64)
            order = rerank_order(scores, getattr(reranker, "fusion", "none"))
            ranked = [(pool[i][0], float(scores[i]), pool[i][1]) for i in order]
        else:
            ranked = [(row, s, s) for row, s in pool]
        return [Hit(row["id"], row["text"], score, rank, row["meta"] or {}, retriever_score=rs)
                for rank, (row, score, rs) in enumerate(ranked, 1)]

    def feedback(self, retrieval_id: str, *, used: Iterable[str] | None = None, clicked: Iterable[str] | None = None,
                 skipped: Iterable[str] | None = None) -> dict[str, Any]:
        """Report which documents of a search were used, clicked or skipped (see :mod:`.logs`)."""
        return record_feedback(self.db, retrieval_id, used=used, clicked=clicked, skipped=skipped)

    # ------------------------------------------------------------ versions
    def switch(self, embedder_version: str) -> B.IndexBuild:
        """Serve the ready build of ``embedder_version`` (atomically; the current one becomes standby)."""
        found = B.find_build(self.db, version_name(load_embedder(self.db, embedder_version)))
        if found is None:
            raise ConflictError(f"no ready index for {embedder_version!r}: run `tuneloop docs reembed "
                                f"--embedder {embedder_version}` first", embedder_version=embedder_version)
        if self._pinned is not None:
            raise ConflictError("this RetrievalIndex is pinned to one embedder; open one without embedder= to switch")
        build = B.switch_to(self.db, found.id)
        self._serve(force=True)
        return build

    def rollback(self) -> B.IndexBuild:
        """Serve the standby build again, at once (it is still loaded)."""
        build = B.rollback_index(self.db)
        self._serve(force=True)
        return build

    def save(self) -> None:
        """Snapshot the loaded indexes that have unsaved changes."""
        with self._lock:
            for served in self._loaded.values():
                served.index.flush()
            self._saved_at = time.monotonic()

    def close(self) -> None:
        self.save()

    def __enter__(self) -> "RetrievalIndex":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _check_query(query: Any, k: Any) -> None:
    if not isinstance(query, str) or not query.strip():
        raise ValidationError("query must be a non-empty string", field="query")
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_K:
        raise ValidationError(f"k must be an integer from 1 to {MAX_K}, got {k!r}", field="k")
