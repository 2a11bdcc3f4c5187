"""Builders: stream interactions, feedback and annotations from the store into :class:`Sample`\\ s.

Each builder streams rows in chunks (a server-side cursor), never the whole table, and counts
why it dropped rows (``counts["dropped_<reason>"]``). Consent is enforced here, at the
source: an interaction with ``consent = false``, or whose user has
``subjects.consent_training = false`` or was deleted, never becomes a sample.

- **sft**: good interactions: ``status = ok``, non-empty, ``quality_score >=
  min_quality_score`` (a missing score fails), ``reward >= min_user_feedback`` when set, no
  failure category in ``drop_failure_categories``, not off-topic.
- **dpo**, from ``dpo_sources``:
  ``annotations`` - pairwise annotations (``annotations.kind = "pairwise"``, ``status =
  "done"``, ``choice`` a|b) by people; ``judge`` - the same rows written by the LLM judge
  (``annotator`` starting with ``judge``); ``regenerate`` - regenerate chains in one session:
  every abandoned answer is rejected against the answer the user finally kept;
  ``rewards`` - interactions answering the same or a near-duplicate prompt whose rewards
  differ by at least ``min_reward_margin``: best chosen, worst rejected.
- **kto**: interactions with a reward; ``label = reward > 0`` (zero rewards are skipped).
- **triplets** / **reranker**: retrieval logs in ``interactions.meta["retrieval"]``::

      {"query": "how do I reset my password",          # defaults to interactions.query
       "docs": [{"id": "d1", "text": "...", "score": 0.83, "rank": 1,
                 "clicked": true, "used": false, "skipped": false}, ...]}

  Positives are docs the user clicked or the answer used. Negatives are docs marked
  skipped, plus "skip-above" docs: ranked above a positive but neither clicked nor used
  (hard negatives). A triplet pairs each positive with the best-ranked negative.
  Reranker rows score used docs 1.0, clicked docs 0.75, negatives 0.0; other docs carry no
  label and are left out.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa

from tuneloop.datasets.dedup import GoldenGuard, MinHasher, band_keys, estimate_jaccard, exact_key, lsh_params
from tuneloop.datasets.formats import Sample
from tuneloop.signals.implicit import ImplicitConfig, similarity
from tuneloop.store import schema

if TYPE_CHECKING:
    from tuneloop.datasets.generator import DataGeneratorConfig

_IT = schema.interactions
_SUBJ = schema.subjects
_BASE_COLUMNS = ("id", "ts", "user_id", "session_id", "query", "messages", "response", "status",
                 "quality_score", "reward", "failure_category", "consent")


def _select(columns: tuple[str, ...], cfg: "DataGeneratorConfig", *, kinds: tuple[str, ...] = ("chat",),
            order_session: bool = False) -> sa.Select:
    """Interactions with the consent of their subject, in time (or session) order."""
    stmt = (sa.select(*[_IT.c[c] for c in columns],
                      _SUBJ.c.consent_training.label("subject_consent"),
                      _SUBJ.c.deleted_at.label("subject_deleted"))
            .select_from(_IT.outerjoin(_SUBJ, _SUBJ.c.user_id == _IT.c.user_id))
            .where(_IT.c.kind.in_(kinds)))
    if cfg.since is not None:
        stmt = stmt.where(_IT.c.ts > cfg.since)
    if cfg.until is not None:
        stmt = stmt.where(_IT.c.ts <= cfg.until)
    if order_session:
        return stmt.order_by(_IT.c.user_id, _IT.c.session_id, _IT.c.ts, _IT.c.id)
    return stmt.order_by(_IT.c.ts, _IT.c.id)


def stream(db, stmt: sa.Select, chunk: int) -> Iterator[Mapping[str, Any]]:
    """Rows of ``stmt`` as dicts, ``chunk`` at a time (``Database.iter_rows``, with the dict
    built by one C-level ``dict(zip())`` instead of through the row's mapping view)."""
    with db.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=chunk).execute(stmt)
        keys = tuple(result.keys())
        for row in result:
            yield dict(zip(keys, row))


def consented(row: Mapping[str, Any]) -> bool:
    """True if the interaction and its user allow training on it."""
    if row.get("consent") is False:
        return False
    if row.get("subject_consent") is False or row.get("subject_deleted") is not None:
        return False
    return True


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return str(content)


def prompt_messages(row: Mapping[str, Any]) -> list[dict[str, str]]:
    """The conversation before the answer: ``messages`` (minus a trailing copy of the
    response) or, when the row has none, the query as one user message."""
    msgs = row.get("messages")
    if not msgs:
        return [{"role": "user", "content": row.get("query") or ""}]
    out = [{"role": str(m.get("role")), "content": _content_text(m.get("content"))} for m in msgs]
    if out and out[-1]["role"] == "assistant":
        out = out[:-1]  # messages logged with the answer appended
    return out


def base_reason(row: Mapping[str, Any], cfg: "DataGeneratorConfig", off_topic: re.Pattern | None) -> str | None:
    """Why a row may not be used at all (consent, error, empty, off-topic), or None."""
    if not consented(row):
        return "consent"
    if row.get("status", "ok") != "ok":
        return "error"
    query, response = (row.get("query") or "").strip(), (row.get("response") or "").strip()
    if len(query) < cfg.min_chars or len(response) < cfg.min_chars:
        return "empty"
    if cfg.max_chars is not None and len(query) + len(response) > cfg.max_chars:
        return "too_long"
    if row.get("failure_category") == "out_of_scope":
        return "off_topic"
    if off_topic is not None and off_topic.search(query):
        return "off_topic"
    return None


def sft_reason(row: Mapping[str, Any], cfg: "DataGeneratorConfig", off_topic: re.Pattern | None) -> str | None:
    """Why an interaction is not a good SFT example, or None. Pure.

    >>> from tuneloop.datasets.generator import DataGeneratorConfig
    >>> sft_reason({"query": "q", "response": "a", "quality_score": 0.5}, DataGeneratorConfig(), None)
    'quality'
    """
    reason = base_reason(row, cfg, off_topic)
    if reason:
        return reason
    if cfg.min_quality_score is not None:
        q = row.get("quality_score")
        if q is None or q < cfg.min_quality_score:
            return "quality"
    if cfg.min_user_feedback is not None:
        r = row.get("reward")
        if r is None or r < cfg.min_user_feedback:
            return "feedback"
    if row.get("failure_category") in cfg.drop_failure_categories:
        return "failure"
    return None


def _off_topic(cfg: "DataGeneratorConfig") -> re.Pattern | None:
    if not cfg.off_topic_patterns:
        return None
    return re.compile("|".join(f"(?:{p})" for p in cfg.off_topic_patterns), re.I)


def sft_samples(db, cfg: "DataGeneratorConfig", counts: Counter) -> Iterator[Sample]:
    """SFT samples from good interactions, in time order."""
    off = _off_topic(cfg)
    for row in stream(db, _select(_BASE_COLUMNS, cfg), cfg.chunk_size):
        counts["read"] += 1
        reason = sft_reason(row, cfg, off)
        if reason:
            counts[f"dropped_{reason}"] += 1
            continue
        yield Sample(prompt=prompt_messages(row), completion=row["response"], members=[(row["id"], "train")])


def kto_samples(db, cfg: "DataGeneratorConfig", counts: Counter) -> Iterator[Sample]:
    """KTO samples: the answer, with ``label = reward > 0``; zero / missing rewards skipped."""
    off = _off_topic(cfg)
    for row in stream(db, _select(_BASE_COLUMNS, cfg).where(_IT.c.reward.is_not(None)), cfg.chunk_size):
        counts["read"] += 1
        reason = base_reason(row, cfg, off)
        if reason is None and row["reward"] == 0:
            reason = "neutral"
        if reason:
            counts[f"dropped_{reason}"] += 1
            continue
        desirable = row["reward"] > 0
        counts["desirable" if desirable else "undesirable"] += 1
        yield Sample(prompt=prompt_messages(row), completion=row["response"], label=desirable,
                     members=[(row["id"], "train")])


# ---------------------------------------------------------------- DPO
def dpo_samples(db, cfg: "DataGeneratorConfig", counts: Counter) -> Iterator[Sample]:
    """DPO pairs from every source in ``cfg.dpo_sources`` (counted as ``pairs_<source>``)."""
    sources = {
        "annotations": lambda: annotation_pairs(db, cfg, counts, judge=False),
        "judge": lambda: annotation_pairs(db, cfg, counts, judge=True),
        "regenerate": lambda: regenerate_pairs(db, cfg, counts),
        "rewards": lambda: reward_pairs(db, cfg, counts),
    }
    for name in cfg.dpo_sources:
        for sample in sources[name]():
            counts[f"pairs_{name}"] += 1
            yield sample


def _is_judge(row: Mapping[str, Any]) -> bool:
    meta = row.get("meta") or {}
    return str(row.get("annotator") or "").startswith("judge") or meta.get("source") == "judge"


def annotation_pairs(db, cfg: "DataGeneratorConfig", counts: Counter, *, judge: bool) -> Iterator[Sample]:
    """Pairs from done pairwise annotations (people's, or the judge's when ``judge``)."""
    an = schema.annotations
    stmt = (sa.select(an.c.id, an.c.interaction_id, an.c.prompt, an.c.response_a, an.c.response_b, an.c.choice,
                      an.c.annotator, an.c.meta, an.c.created_at, _IT.c.messages, _IT.c.query, _IT.c.consent,
                      _SUBJ.c.consent_training.label("subject_consent"), _SUBJ.c.deleted_at.label("subject_deleted"))
            .select_from(an.outerjoin(_IT, _IT.c.id == an.c.interaction_id)
                         .outerjoin(_SUBJ, _SUBJ.c.user_id == _IT.c.user_id))
            .where(an.c.kind == "pairwise", an.c.status == "done", an.c.choice.in_(("a", "b")))
            .order_by(an.c.created_at, an.c.id))
    if cfg.since is not None:
        stmt = stmt.where(an.c.created_at > cfg.since)
    for row in stream(db, stmt, cfg.chunk_size):
        if _is_judge(row) != judge:
            continue
        counts["read"] += 1
        if not consented(row):
            counts["dropped_consent"] += 1
            continue
        a, b = row["response_a"] or "", row["response_b"] or ""
        chosen, rejected = (a, b) if row["choice"] == "a" else (b, a)
        prompt = ([{"role": "user", "content": row["prompt"]}] if row["prompt"]
                  else prompt_messages(row) if row["interaction_id"] else [])
        if not prompt or not chosen.strip() or not rejected.strip() or chosen.strip() == rejected.strip():
            counts["dropped_empty"] += 1
            continue
        members = [(row["interaction_id"], "pair")] if row["interaction_id"] else []
        yield Sample(prompt=prompt, completion=chosen, rejected=rejected, members=members,
                     source="judge" if judge else "annotations")


def _ids_with_feedback(db, kinds: tuple[str, ...], chunk: int) -> set[str]:
    fb = schema.feedback
    stmt = sa.select(fb.c.interaction_id).where(fb.c.kind.in_(kinds)).distinct()
    return {r["interaction_id"] for r in stream(db, stmt, chunk)}


def regenerate_pairs(db, cfg: "DataGeneratorConfig", counts: Counter) -> Iterator[Sample]:
    """Regenerate chains: each abandoned answer (regenerate feedback from the client or the
    implicit inference) is rejected against the next answer in the session to a similar
    query that the user kept (not regenerated, not reported). Only sessions holding a
    regenerated interaction are read; interactions without a session cannot chain."""
    regenerated = _ids_with_feedback(db, ("regenerate",), cfg.chunk_size)
    if not regenerated:
        return
    reported = _ids_with_feedback(db, ("report",), cfg.chunk_size)
    icfg = ImplicitConfig()
    window = max(icfg.regenerate_window_s, cfg.regenerate_window_s)
    off = _off_topic(cfg)
    pending: list[Mapping[str, Any]] = []
    key = None
    fb, other = schema.feedback, _IT.alias("regenerated")
    sessions = (sa.select(other.c.session_id).select_from(other.join(fb, fb.c.interaction_id == other.c.id))
                .where(fb.c.kind == "regenerate", other.c.session_id.is_not(None)))
    stmt = _select(_BASE_COLUMNS, cfg, order_session=True).where(_IT.c.session_id.in_(sessions))
    for row in stream(db, stmt, cfg.chunk_size):
        row_key = (row["user_id"], row["session_id"])
        if row_key != key:
            pending, key = [], row_key
        if pending and (row["ts"] - pending[-1]["ts"] > window
                        or similarity(pending[-1]["query"] or "", row["query"] or "") < icfg.similarity_threshold):
            pending = []
        if row["id"] in regenerated:
            pending.append(row)
            continue
        if pending and row["id"] not in reported:
            yield from _chain_pairs(pending, row, cfg, off, counts)
        pending = []


def _chain_pairs(abandoned: list[Mapping[str, Any]], kept: Mapping[str, Any], cfg: "DataGeneratorConfig",
                 off: re.Pattern | None, counts: Counter) -> Iterator[Sample]:
    for bad in abandoned:
        counts["read"] += 1
        reason = base_reason(kept, cfg, off) or base_reason(bad, cfg, off)
        if reason is None and (bad["response"] or "").strip() == (kept["response"] or "").strip():
            reason = "same_answer"
        if reason:
            counts[f"dropped_{reason}"] += 1
            continue
        yield Sample(prompt=prompt_messages(kept), completion=kept["response"], rejected=bad["response"],
                     members=[(kept["id"], "chosen"), (bad["id"], "rejected")], source="regenerate")


def reward_pairs(db, cfg: "DataGeneratorConfig", counts: Counter) -> Iterator[Sample]:
    """Best vs worst answer per group of same / near-duplicate prompts, if their rewards
    differ by at least ``cfg.min_reward_margin``. Groups are found on compact arrays
    (prompt digests, LSH band keys), then only the paired rows are read back in full."""
    ids, rewards, groups = _reward_groups(db, cfg, counts)
    if len(ids) < 2:
        return
    order = np.lexsort((np.arange(len(ids)), -rewards, groups))  # per group: best reward first
    g_sorted = groups[order]
    starts = np.flatnonzero(np.r_[True, g_sorted[1:] != g_sorted[:-1]])
    ends = np.r_[starts[1:], len(order)]
    multi = ends - starts >= 2
    best, worst = order[starts[multi]], order[ends[multi] - 1]
    keep = rewards[best] - rewards[worst] >= cfg.min_reward_margin
    counts["dropped_small_margin"] += int((~keep).sum())
    pairs = [(ids[b], ids[w]) for b, w in zip(best[keep], worst[keep])]
    off = _off_topic(cfg)
    for start in range(0, len(pairs), 500):
        part = pairs[start:start + 500]
        need = [i for p in part for i in p]
        rows = {r["id"]: r for r in db.fetch_all(sa.select(*[_IT.c[c] for c in _BASE_COLUMNS])
                                                 .where(_IT.c.id.in_(need)))}
        for good_id, bad_id in part:
            good, bad = rows[good_id], rows[bad_id]
            if (good["response"] or "").strip() == (bad["response"] or "").strip():
                counts["dropped_same_answer"] += 1
                continue
            if base_reason(good, cfg, off) or base_reason(bad, cfg, off):
                counts["dropped_failure"] += 1
                continue
            yield Sample(prompt=prompt_messages(good), completion=good["response"], rejected=bad["response"],
                         members=[(good_id, "chosen"), (bad_id, "rejected")], source="rewards")


def _reward_groups(db, cfg: "DataGeneratorConfig", counts: Counter) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(ids, rewards, group label) of usable rewarded interactions; same label = same or
    near-duplicate prompt (word-shingle Jaccard >= ``cfg.pair_prompt_threshold``)."""
    cols = ("id", "ts", "user_id", "query", "messages", "response", "status", "reward", "failure_category", "consent")
    stmt = _select(cols, cfg).where(_IT.c.reward.is_not(None))
    ids: list[str] = []
    rewards: list[float] = []
    exact: list[int] = []
    keys, fps = [], []
    thr = cfg.pair_prompt_threshold
    hasher = MinHasher(num_perm=64, ngram=1, seed=11) if thr is not None else None
    bands, rows_per_band = lsh_params(thr, 64) if thr is not None else (0, 0)
    off = _off_topic(cfg)
    batch: list[str] = []

    def flush() -> None:
        if hasher is not None and batch:
            sig = hasher.signatures(batch)
            keys.append(band_keys(sig, bands, rows_per_band))
            fps.append((sig & 0xFFFF).astype(np.uint16))
        batch.clear()

    for row in stream(db, stmt, cfg.chunk_size):
        counts["read_rewarded"] += 1
        if base_reason(row, cfg, off):
            continue
        text = "\n".join(m["content"] for m in prompt_messages(row))
        ids.append(row["id"])
        rewards.append(float(row["reward"]))
        exact.append(exact_key(text) & 0x7FFFFFFFFFFFFFFF)
        batch.append(text)
        if len(batch) >= cfg.chunk_size:
            flush()
    flush()
    exact_arr = np.asarray(exact, dtype=np.int64)
    _, labels = np.unique(exact_arr, return_inverse=True)
    if hasher is not None and keys:
        labels = _merge_near(labels, np.concatenate(keys), np.concatenate(fps), thr)
    return ids, np.asarray(rewards, dtype=np.float64), labels


def _merge_near(labels: np.ndarray, keys: np.ndarray, fps: np.ndarray, threshold: float) -> np.ndarray:
    """Merge exact-prompt groups whose prompts are near-duplicates (LSH + verification)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(labels)
    src, dst = [np.arange(n)], [labels + n]  # node i -- node (n + exact group)
    for band in range(keys.shape[1]):
        col = keys[:, band]
        order = np.argsort(col, kind="stable")
        s = col[order]
        new = np.r_[True, s[1:] != s[:-1]]
        first = order[np.flatnonzero(new)][np.cumsum(new) - 1]
        dup = ~new
        a, b = first[dup], order[dup]
        ok = estimate_jaccard(fps[a], fps[b]) >= threshold
        src.append(a[ok])
        dst.append(b[ok])
    size = n + int(labels.max()) + 1
    s, d = np.concatenate(src), np.concatenate(dst)
    graph = coo_matrix((np.ones(len(s), dtype=np.int8), (s, d)), shape=(size, size))
    _, comp = connected_components(graph, directed=False)
    return comp[:n]


# ---------------------------------------------------------------- retrieval
def _retrieval(row: Mapping[str, Any]) -> tuple[str, list[Mapping[str, Any]]] | None:
    meta = row.get("meta") or {}
    ret = meta.get("retrieval") if isinstance(meta, Mapping) else None
    if not isinstance(ret, Mapping) or not isinstance(ret.get("docs"), list):
        return None
    query = ret.get("query") or row.get("query") or ""
    docs = [d for d in ret["docs"] if isinstance(d, Mapping) and (d.get("text") or "").strip()]
    docs.sort(key=lambda d: (d.get("rank") if d.get("rank") is not None else 1e9))
    return query, docs


def label_docs(docs: list[Mapping[str, Any]]) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """(positives, negatives) of rank-sorted docs: clicked/used vs skipped or skip-above.

    >>> pos, neg = label_docs([{"id": 1, "text": "a"}, {"id": 2, "text": "b", "clicked": True}])
    >>> [d["id"] for d in pos], [d["id"] for d in neg]
    ([2], [1])
    """
    positives = [d for d in docs if d.get("clicked") or d.get("used")]
    last_pos = max((i for i, d in enumerate(docs) if d.get("clicked") or d.get("used")), default=-1)
    negatives = [d for i, d in enumerate(docs)
                 if not (d.get("clicked") or d.get("used")) and (d.get("skipped") or i < last_pos)]
    return positives, negatives


def _retrieval_rows(db, cfg: "DataGeneratorConfig", counts: Counter) -> Iterator[tuple[Mapping, str, list]]:
    cols = ("id", "ts", "user_id", "query", "status", "consent", "meta")
    stmt = _select(cols, cfg, kinds=("chat", "retrieval")).where(_IT.c.meta.is_not(None))
    for row in stream(db, stmt, cfg.chunk_size):
        parsed = _retrieval(row)
        if parsed is None:
            continue
        counts["read"] += 1
        if not consented(row):
            counts["dropped_consent"] += 1
            continue
        query, docs = parsed
        if not query.strip() or not docs:
            counts["dropped_empty"] += 1
            continue
        yield row, query, docs


def triplet_samples(db, cfg: "DataGeneratorConfig", counts: Counter) -> Iterator[Sample]:
    """(query, positive, hard negative) triplets from retrieval logs."""
    for row, query, docs in _retrieval_rows(db, cfg, counts):
        positives, negatives = label_docs(docs)
        if not positives or not negatives:
            counts["dropped_unlabeled"] += 1
            continue
        for pos in positives:
            neg = next((n for n in negatives if n.get("text") != pos.get("text")), None)
            if neg is not None:
                yield Sample(prompt=[{"role": "user", "content": query}], completion=pos["text"],
                             rejected=neg["text"], members=[(row["id"], "train")], source="retrieval")


def reranker_samples(db, cfg: "DataGeneratorConfig", counts: Counter) -> Iterator[Sample]:
    """(query, doc, score) rows: used 1.0, clicked 0.75, skipped / skip-above 0.0."""
    for row, query, docs in _retrieval_rows(db, cfg, counts):
        positives, negatives = label_docs(docs)
        if not positives and not negatives:
            counts["dropped_unlabeled"] += 1
            continue
        for d in positives + negatives:
            score = 1.0 if d.get("used") else 0.75 if d.get("clicked") else 0.0
            yield Sample(prompt=[{"role": "user", "content": query}], completion=d["text"], label=score,
                         members=[(row["id"], "train")], source="retrieval")


BUILDERS = {"sft": sft_samples, "dpo": dpo_samples, "kto": kto_samples,
            "triplets": triplet_samples, "reranker": reranker_samples}


def golden_guard(db, cfg: "DataGeneratorConfig") -> GoldenGuard:
    """The leak guard over golden prompts (all sets, or ``cfg.golden_set``): approved ones and
    proposed ones too, since a proposal approved later must not have been trained on."""
    g = schema.golden_examples
    stmt = sa.select(g.c.prompt).where(g.c.status != "rejected")
    if cfg.golden_set is not None:
        stmt = stmt.where(g.c.set_name == cfg.golden_set)
    prompts = [r["prompt"] for r in stream(db, stmt, cfg.chunk_size)]
    return GoldenGuard(prompts, threshold=cfg.leak_threshold)
