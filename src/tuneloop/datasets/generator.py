"""The seed's ``TrainingDataGenerator``: production logs -> a clean training dataset.

>>> # from tuneloop import UsageLogger, TrainingDataGenerator, DataGeneratorConfig
>>> # config = DataGeneratorConfig(min_quality_score=0.7, min_user_feedback=1, format_type="chatml")
>>> # result = TrainingDataGenerator(logger, config).generate("training_data.jsonl")
>>> # result.final_count, result.dropped
>>> DataGeneratorConfig(kind="dpo").format_type
'messages'

One build, three passes, memory bounded by the index, not by the data:

1. stream samples from the store (builders.py); per chunk: PII scrubbing, exact dedup on a
   64-bit digest of the normalized text, the golden-set leak guard, MinHash signatures
   into the near-duplicate index; the rendered rows go to a spool file beside the output;
2. near-duplicate clusters from the index (numpy, LSH + verification + components);
3. re-read the spool: skip near-duplicates, cap rows per topic cluster, split train /
   validation by a hash of the prompt, write the files atomically.

Then the snapshot: a ``datasets`` row with the files' content hash, and ``dataset_members``.
"""
from __future__ import annotations

import itertools
import os
import random
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tuneloop.datasets import builders, export, snapshot
from tuneloop.datasets.dedup import GoldenGuard, NearDuplicateIndex, digest, normalize_text
from tuneloop.datasets.formats import KINDS, Sample, check_format, parse, render
from tuneloop.datasets.hygiene import TopicClusters, in_validation, scrub_sample
from tuneloop.errors import DatasetError, ValidationError
from tuneloop.privacy.pii import PII_KINDS, Scrubber, merge_counts

_DPO_SOURCES = ("annotations", "judge", "regenerate", "rewards")
_FAILURES = ("empty", "truncated", "refusal", "repetition", "format_violation", "hallucination")


def _help(text: str, default: Any) -> Any:
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": text})
    return field(default=default, metadata={"help": text})


@dataclass
class DataGeneratorConfig:
    """How production interactions become a dataset (seed 002's names first)."""

    min_quality_score: float | None = _help("drop interactions scored below this (None: no filter)", 0.7)
    min_user_feedback: float | None = _help("drop interactions whose reward is below this (None: no filter)", None)
    deduplicate: bool = _help("remove exact and near duplicates", True)
    format_type: str | None = _help("row format (None: the kind's default, chatml for sft)", None)
    include_existing_data: bool = _help("merge a rehearsal buffer (existing_data_path) against forgetting", False)
    existing_data_path: str | None = _help("JSONL rows of the same kind to merge", None)
    kind: str = _help("sft | dpo | kto | triplets | reranker", "sft")
    near_dedup_threshold: float | None = _help("Jaccard of word 3-grams above which rows are near duplicates", 0.8)
    near_dedup_num_perm: int = _help("MinHash permutations", 128)
    scrub_pii: bool = _help("replace emails, phones, cards, IBANs, IPs, secrets", True)
    pii_kinds: tuple[str, ...] = _help("PII kinds to scrub", PII_KINDS)
    leak_guard: bool = _help("drop examples whose prompt matches a golden prompt", True)
    leak_threshold: float = _help("word-set Jaccard at which a prompt near-duplicates a golden one", 0.8)
    golden_set: str | None = _help("golden set to guard (None: every approved golden example)", None)
    validation_fraction: float = _help("share of prompts held out for validation", 0.0)
    max_per_topic: int | None = _help("cap of rows per topic cluster (None: no balancing)", None)
    num_topics: int = _help("topic clusters for balancing", 16)
    since: float | None = _help("only interactions after this epoch time", None)
    until: float | None = _help("only interactions up to this epoch time", None)
    min_chars: int = _help("shorter queries / answers count as empty", 1)
    max_chars: int | None = _help("drop rows whose query + answer is longer", None)
    drop_failure_categories: tuple[str, ...] = _help("failure categories never used as SFT targets", _FAILURES)
    off_topic_patterns: tuple[str, ...] = _help("regexes; a query matching one is off-topic", ())
    dpo_sources: tuple[str, ...] = _help("where DPO pairs come from", _DPO_SOURCES)
    min_reward_margin: float = _help("reward gap needed to pair two answers to one prompt", 1.0)
    pair_prompt_threshold: float | None = _help("word-set Jaccard grouping near-duplicate prompts (None: exact)", 0.9)
    regenerate_window_s: float = _help("seconds within which a regeneration follows an answer", 600.0)
    seed: int = _help("seed of topic clustering", 0)
    chunk_size: int = _help("rows per streamed chunk", 4096)
    export_parquet: bool = _help("also write <output>.parquet", False)
    llamafactory_info: bool = _help("write a dataset_info.json entry beside the output", True)
    dataset_name: str | None = _help("name of the LLaMA-Factory entry (default: file stem)", None)
    show_progress: bool = _help("progress bars on stderr", False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValidationError(f"kind must be one of {list(KINDS)}, got {self.kind!r}", field="kind")
        self.format_type = check_format(self.kind, self.format_type)
        for name in ("min_quality_score", "near_dedup_threshold", "pair_prompt_threshold"):
            v = getattr(self, name)
            if v is not None and not 0.0 <= v <= 1.0:
                raise ValidationError(f"{name} must be between 0 and 1, got {v}", field=name)
        if not 0.0 < self.leak_threshold <= 1.0:
            raise ValidationError("leak_threshold must be in (0, 1]", field="leak_threshold")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValidationError("validation_fraction must be in [0, 1)", field="validation_fraction")
        if self.include_existing_data and not self.existing_data_path:
            raise ValidationError("include_existing_data needs existing_data_path", field="existing_data_path")
        if self.max_per_topic is not None and self.max_per_topic < 1:
            raise ValidationError("max_per_topic must be >= 1", field="max_per_topic")
        if self.chunk_size < 1 or self.num_topics < 1 or self.near_dedup_num_perm < 16:
            raise ValidationError("chunk_size, num_topics must be >= 1 and near_dedup_num_perm >= 16",
                                  field="chunk_size")
        unknown = set(self.dpo_sources) - set(_DPO_SOURCES)
        if unknown:
            raise ValidationError(f"unknown dpo_sources {sorted(unknown)}; known: {list(_DPO_SOURCES)}",
                                  field="dpo_sources")
        self.pii_kinds = tuple(self.pii_kinds)
        Scrubber(self.pii_kinds)  # validates the kinds
        self.drop_failure_categories = tuple(self.drop_failure_categories)
        self.off_topic_patterns = tuple(self.off_topic_patterns)
        self.dpo_sources = tuple(self.dpo_sources)


@dataclass(frozen=True)
class GenerationResult:
    """What a build produced and why rows were dropped (``counts["dropped_<reason>"]``)."""

    final_count: int
    train_count: int
    validation_count: int
    counts: dict[str, int]
    pii_counts: dict[str, int]
    dataset_id: str
    content_hash: str
    path: str
    validation_path: str | None
    kind: str
    format_type: str
    timings: dict[str, float]
    parquet_path: str | None = None
    llamafactory_entry: dict[str, Any] | None = None

    @property
    def dropped(self) -> dict[str, int]:
        """Rows dropped per filter, e.g. ``{"quality": 120, "near_duplicate": 31}``."""
        return {k[len("dropped_"):]: v for k, v in self.counts.items() if k.startswith("dropped_")}

    @property
    def rates(self) -> dict[str, float]:
        """Rows per second of each timed stage (rows entering it / seconds)."""
        n = {"read": self.counts.get("read", 0) + self.counts.get("existing_read", 0)}
        n.update({k: self.counts.get("samples", 0) for k in ("pii", "exact_dedup", "leak_guard", "minhash", "spool")})
        n.update({"near_dedup": self.counts.get("spooled", 0), "write": self.counts.get("spooled", 0)})
        return {k: n.get(k, 0) / t for k, t in self.timings.items() if t > 0 and n.get(k)}


def _database(logger_or_db: Any):
    from tuneloop.store import Database

    if isinstance(logger_or_db, Database):
        return logger_or_db
    db = getattr(logger_or_db, "db", None)
    if isinstance(db, Database):
        return db
    raise ValidationError("TrainingDataGenerator needs a tuneloop Database or an object with a .db "
                          "(a UsageLogger writing to a database)", field="logger")


class _Timer:
    def __init__(self) -> None:
        self.t: Counter = Counter()

    def timed(self, name: str, it: Iterator) -> Iterator:
        while True:
            t0 = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                self.t[name] += time.perf_counter() - t0
                return
            self.t[name] += time.perf_counter() - t0
            yield item


def _existing_samples(cfg: DataGeneratorConfig, counts: Counter) -> Iterator[Sample]:
    path = Path(os.path.expanduser(cfg.existing_data_path or ""))
    if not path.is_file():
        raise DatasetError(f"existing_data_path {str(path)!r} is not a file", path=str(path))
    for row in export.read_jsonl(path):
        counts["existing_read"] += 1
        yield parse(row, cfg.kind)


class TrainingDataGenerator:
    """Builds a dataset snapshot from the store (seed 002's generator).

    ``logger_or_db`` is a :class:`tuneloop.store.Database` or anything with a ``.db`` (the
    capture package's ``UsageLogger``).
    """

    def __init__(self, logger_or_db: Any, config: DataGeneratorConfig | None = None) -> None:
        self.db = _database(logger_or_db)
        self.config = config or DataGeneratorConfig()

    def generate(self, output_path: str | os.PathLike) -> GenerationResult:
        """Build, write and snapshot the dataset at ``output_path`` (JSONL)."""
        cfg = self.config
        out = Path(os.path.expanduser(str(output_path)))
        out.parent.mkdir(parents=True, exist_ok=True)
        counts: Counter = Counter()
        timer = _Timer()
        source: Iterator[Sample] = builders.BUILDERS[cfg.kind](self.db, cfg, counts)
        if cfg.include_existing_data:
            source = itertools.chain(_existing_samples(cfg, counts), source)
        guard = builders.golden_guard(self.db, cfg) if cfg.leak_guard else GoldenGuard([])
        spool = export.atomic_path(out.with_name(out.name + ".spool"))
        try:
            state = _spool_pass(timer.timed("read", source), cfg, guard, spool, counts, timer)
            t0 = time.perf_counter()
            drop = state.index.duplicates() if state.index is not None else None
            timer.t["near_dedup"] += time.perf_counter() - t0
            if drop is not None:
                counts["dropped_near_duplicate"] = int(drop.sum())
            t0 = time.perf_counter()
            written = _write_pass(spool, state, drop, cfg, out, counts)
            timer.t["write"] += time.perf_counter() - t0
        finally:
            spool.unlink(missing_ok=True)
        return self._finish(out, written, counts, state.pii, timer)

    def _finish(self, out: Path, written: "_Written", counts: Counter, pii: dict[str, int],
                timer: _Timer) -> GenerationResult:
        cfg = self.config
        t0 = time.perf_counter()
        parquet = str(export.to_parquet(out)) if cfg.export_parquet else None
        entry = (export.write_llamafactory_info(out, kind=cfg.kind, fmt=cfg.format_type, name=cfg.dataset_name)
                 if cfg.llamafactory_info else None)
        timer.t["export"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        content_hash = snapshot.file_hash(out, written.validation_path)
        final_counts = {k: int(v) for k, v in sorted(counts.items())}
        config = {**asdict(cfg), "validation_path": written.validation_path}
        ds_id = snapshot.record_snapshot(
            self.db, kind=cfg.kind, format=cfg.format_type, path=str(out), content_hash=content_hash,
            row_count=written.train + written.validation, config=config,
            counts={**final_counts, "pii": pii}, members=written.members)
        timer.t["snapshot"] += time.perf_counter() - t0
        return GenerationResult(
            final_count=written.train + written.validation, train_count=written.train,
            validation_count=written.validation, counts=final_counts, pii_counts=dict(pii), dataset_id=ds_id,
            content_hash=content_hash, path=str(out), validation_path=written.validation_path, kind=cfg.kind,
            format_type=cfg.format_type, timings={k: round(v, 4) for k, v in timer.t.items()},
            parquet_path=parquet, llamafactory_entry=entry)


@dataclass
class _SpoolState:
    index: NearDuplicateIndex | None
    split_keys: list[int] = field(default_factory=list)
    members: list[Any] = field(default_factory=list)
    queries: list[str] = field(default_factory=list)
    pii: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Keys:
    """The normalized texts of a sample, computed once and used by every stage."""

    prompt: str
    query: str
    content: str
    exact: int
    split: int


def _keys(s: Sample) -> _Keys:
    prompt = normalize_text("\n".join(m.get("content") or "" for m in s.prompt))
    query = prompt if len(s.prompt) == 1 else normalize_text(s.query)
    completion = normalize_text(s.completion)
    rejected = normalize_text(s.rejected) if s.rejected else ""
    label = "" if s.label is None else str(s.label)
    # The exact key lives only within this build: Python's (salted, 64-bit) hash will do.
    # The split key must be the same in every process: a real digest.
    return _Keys(prompt, query, f"{prompt} {completion} {rejected}",
                 hash((prompt, completion, rejected, label)), digest(prompt))


def _spool_pass(samples: Iterable[Sample], cfg: DataGeneratorConfig, guard: GoldenGuard, spool: Path,
                counts: Counter, timer: _Timer) -> _SpoolState:
    """Pass 1: scrub, exact-dedup, leak-guard, sign and spool every sample."""
    near = cfg.deduplicate and cfg.near_dedup_threshold is not None
    state = _SpoolState(index=NearDuplicateIndex(cfg.near_dedup_threshold, num_perm=cfg.near_dedup_num_perm)
                        if near else None)
    scrubber = Scrubber(cfg.pii_kinds)
    seen: set[int] = set()
    encode = export._encode
    t = timer.t
    with open(spool, "w", encoding="utf-8") as f:
        for chunk in _batched(_progress(samples, cfg, "reading"), cfg.chunk_size):
            counts["samples"] += len(chunk)
            t0 = time.perf_counter()
            if cfg.scrub_pii:
                chunk = _scrub_chunk(chunk, scrubber, state.pii, counts)
            t1 = time.perf_counter()
            keys = [_keys(s) for s in chunk]
            if cfg.deduplicate:
                chunk, keys = _exact_chunk(chunk, keys, seen, counts)
            t2 = time.perf_counter()
            if guard:
                leaks = guard.leaks([k.query for k in keys], normalized=True)
                counts["dropped_golden_leak"] += int(leaks.sum())
                chunk = [s for s, leak in zip(chunk, leaks) if not leak]
                keys = [k for k, leak in zip(keys, leaks) if not leak]
            t3 = time.perf_counter()
            if state.index is not None:
                state.index.add_texts([k.content for k in keys], normalized=True)
            t4 = time.perf_counter()
            for s, k in zip(chunk, keys):
                f.write(encode(render(s, cfg.kind, cfg.format_type)))
                f.write("\n")
                state.split_keys.append(k.split)
                state.members.append(s.members[0] if len(s.members) == 1 else tuple(s.members))
                if cfg.max_per_topic is not None:
                    state.queries.append(s.query)
            counts["spooled"] += len(chunk)
            t5 = time.perf_counter()
            for name, dt in (("pii", t1 - t0), ("exact_dedup", t2 - t1), ("leak_guard", t3 - t2),
                             ("minhash", t4 - t3), ("spool", t5 - t4)):
                t[name] += dt
    return state


def _scrub_chunk(chunk: list[Sample], scrubber: Scrubber, pii: dict[str, int], counts: Counter) -> list[Sample]:
    out = []
    for s in chunk:
        s2, c = scrub_sample(s, scrubber)
        if c:
            merge_counts(pii, c)
            counts["rows_with_pii"] += 1
        out.append(s2)
    return out


def _exact_chunk(chunk: list[Sample], keys: list[_Keys], seen: set[int],
                 counts: Counter) -> tuple[list[Sample], list[_Keys]]:
    out, out_keys = [], []
    for s, k in zip(chunk, keys):
        if k.exact in seen:
            counts["dropped_exact_duplicate"] += 1
            continue
        seen.add(k.exact)
        out.append(s)
        out_keys.append(k)
    return out, out_keys


@dataclass
class _Written:
    train: int
    validation: int
    validation_path: str | None
    members: list[tuple[str, str]]


def _validation_path(out: Path) -> Path:
    return out.with_name(f"{out.stem}.validation{out.suffix or '.jsonl'}")


def _topic_caps(state: _SpoolState, drop, cfg: DataGeneratorConfig) -> list[bool] | None:
    """Per spooled row: True if its topic cluster is already full (rows kept in order)."""
    if cfg.max_per_topic is None or not state.queries:
        return None
    alive = [i for i in range(len(state.queries)) if drop is None or not drop[i]]
    rng = random.Random(cfg.seed)
    sample = [state.queries[i] for i in (rng.sample(alive, 20000) if len(alive) > 20000 else alive)]
    clusters = TopicClusters(cfg.num_topics, seed=cfg.seed).fit(sample or [""])
    capped = [False] * len(state.queries)
    seen: Counter = Counter()
    for start in range(0, len(alive), 8192):
        idx = alive[start:start + 8192]
        for i, topic in zip(idx, clusters.assign([state.queries[i] for i in idx])):
            seen[int(topic)] += 1
            capped[i] = seen[int(topic)] > cfg.max_per_topic
    return capped


def _write_pass(spool: Path, state: _SpoolState, drop, cfg: DataGeneratorConfig, out: Path,
                counts: Counter) -> _Written:
    """Pass 3: keep non-duplicates under the topic cap, split, write atomically."""
    capped = _topic_caps(state, drop, cfg)
    val_path = _validation_path(out) if cfg.validation_fraction > 0 else None
    tmp_train = export.atomic_path(out)
    tmp_val = export.atomic_path(val_path) if val_path else None
    members: list[tuple[str, str]] = []
    n_train = n_val = 0
    try:
        with open(spool, encoding="utf-8") as src, open(tmp_train, "w", encoding="utf-8") as ft, \
                (open(tmp_val, "w", encoding="utf-8") if tmp_val else open(os.devnull, "w")) as fv:
            for i, line in enumerate(src):
                if drop is not None and drop[i]:
                    continue
                if capped is not None and capped[i]:
                    counts["dropped_topic_cap"] += 1
                    continue
                val = in_validation(state.split_keys[i], cfg.validation_fraction)
                (fv if val else ft).write(line)
                n_val += val
                n_train += not val
                m = state.members[i]
                for iid, role in ([m] if m and isinstance(m[0], str) else m):
                    members.append((iid, "validation" if val else role))
        os.replace(tmp_train, out)
        if tmp_val is not None:
            os.replace(tmp_val, val_path)
    finally:
        tmp_train.unlink(missing_ok=True)
        if tmp_val is not None:
            tmp_val.unlink(missing_ok=True)
    counts["train"], counts["validation"] = n_train, n_val
    return _Written(n_train, n_val, str(val_path) if val_path else None, members)


def _batched(it: Iterable[Sample], n: int) -> Iterator[list[Sample]]:
    it = iter(it)
    while chunk := list(itertools.islice(it, n)):
        yield chunk


def _progress(it: Iterable[Sample], cfg: DataGeneratorConfig, desc: str) -> Iterable[Sample]:
    if not cfg.show_progress:
        return it
    from tqdm import tqdm

    return tqdm(it, desc=desc, unit=" samples", mininterval=1.0)
