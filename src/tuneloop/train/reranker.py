"""Reranker fine-tuning: a cross-encoder initialised from all-MiniLM-L6-v2, on (query, doc, relevance) rows.

A cross-encoder reads the query and the document together and outputs one relevance
logit; it is slower than the bi-encoder retriever but sees word-level interactions, so it
rescores the retriever's top candidates. Initialised from all-MiniLM-L6-v2's encoder with a
fresh one-output head (sentence-transformers' ``CrossEncoder(model, num_labels=1)`` does the
same).

Losses: ``bce`` (pointwise binary cross-entropy against the relevance in [0, 1], as
sentence-transformers' ``BinaryCrossEntropyLoss``) or ``listwise`` (per query, a softmax over
its documents against the relevance-normalised target, as ``ListNetLoss``; needs several
documents per query, which retrieval logs have).

Input: JSONL rows ``{"query", "doc", "score"}`` (the datasets ``reranker`` format).
Output: ``<output_dir>/model``, loadable by
:class:`tuneloop.retrieval.versions.CrossEncoderReranker`.

>>> RerankerTrainer(RerankerConfig(max_steps=5)).subprocess_spec()["ref"]
'tuneloop.train.reranker:train_reranker'
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneloop.errors import ConfigError, DatasetError, TrainingError
from tuneloop.train.base import ProgressFn, TrainResult, emit_event

__all__ = ["RerankerConfig", "RerankerTrainer", "load_relevance_rows", "train_reranker"]

LOSSES = ("bce", "listwise")


def _f(default: Any, help: str) -> Any:  # noqa: A002
    return field(default=default, metadata={"help": help})


@dataclass
class RerankerConfig:
    """Configuration of :class:`RerankerTrainer`."""

    epochs: int = _f(1, "passes over the rows (ignored when max_steps > 0)")
    max_steps: int = _f(-1, "stop after this many optimizer steps (-1: run the epochs)")
    batch_size: int = _f(16, "rows per step (listwise: queries per step)")
    learning_rate: float = _f(1e-4, "AdamW peak learning rate (the head starts from scratch: higher than a bi-encoder's)")
    weight_decay: float = _f(0.01, "AdamW weight decay")
    warmup_ratio: float = _f(0.1, "share of steps with a linear learning-rate warm-up")
    max_length: int = _f(256, "tokens per (query, document) pair")
    loss: str = _f("bce", "bce (pointwise) | listwise (softmax over each query's documents)")
    val_fraction: float = _f(0.0, "hold this share of queries out and report nDCG@10 before / after")
    seed: int = _f(0, "shuffling and head initialisation seed")
    num_threads: int | None = _f(None, "torch CPU threads (None: torch's default)")

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ConfigError(f"loss must be one of {list(LOSSES)}, not {self.loss!r}")
        if self.batch_size < 1 or self.epochs < 1 or self.max_length < 8:
            raise ConfigError("batch_size and epochs must be at least 1, max_length at least 8")
        if not self.learning_rate > 0:
            raise ConfigError("learning_rate must be positive")
        if not 0 <= self.warmup_ratio < 1 or not 0 <= self.val_fraction < 1:
            raise ConfigError("warmup_ratio and val_fraction must be in [0, 1)")

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "RerankerConfig":
        data = dict(data or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown reranker config key(s) {unknown}; known: {sorted(known)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_relevance_rows(path: str | os.PathLike) -> list[tuple[str, str, float]]:
    """(query, doc, relevance in [0, 1]) rows of a reranker JSONL file; a bad line names itself."""
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"reranker rows file {p} does not exist", path=str(p))
    rows: list[tuple[str, str, float]] = []
    with p.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
                q, doc, score = raw["query"], raw.get("doc", raw.get("document")), float(raw["score"])
            except (ValueError, KeyError, TypeError):
                q = doc = None
                score = math.nan
            if not (isinstance(q, str) and q.strip() and isinstance(doc, str) and doc.strip()
                    and 0.0 <= score <= 1.0):
                raise DatasetError(f"{p}:{n}: reranker rows need 'query' and 'doc' texts and a 'score' in [0, 1]",
                                   path=str(p), line=n)
            rows.append((q, doc, score))
    if not rows:
        raise DatasetError(f"{p} holds no reranker rows", path=str(p))
    return rows


def _by_query(rows: list[tuple[str, str, float]]) -> dict[str, list[tuple[str, float]]]:
    groups: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for q, d, s in rows:
        groups[q].append((d, s))
    return groups


class RerankerTrainer:
    """Trainer backend ``reranker``: runs in the training worker as a callable (``train_reranker``)."""

    name = "reranker"
    method = "reranker"

    def __init__(self, config: RerankerConfig | dict[str, Any] | None = None) -> None:
        self.config = config if isinstance(config, RerankerConfig) else RerankerConfig.from_dict(config)

    def subprocess_spec(self) -> dict[str, Any]:
        # The worker knows "callable" specs; the config travels as the spec's "config".
        return {"kind": "callable", "ref": "tuneloop.train.reranker:train_reranker", "name": self.name}

    def train(self, dataset_path: str | os.PathLike, output_dir: str | os.PathLike, base_model: str | None,
              config: Any = None, *, progress: ProgressFn | None = None) -> TrainResult:
        cfg = (config if isinstance(config, RerankerConfig)
               else RerankerConfig.from_dict(config) if config else self.config)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        groups = _by_query(load_relevance_rows(dataset_path))
        train_q, eval_q = _split(list(groups), cfg)
        base = str(base_model or _default_base())
        torch.manual_seed(cfg.seed)
        try:
            tok = AutoTokenizer.from_pretrained(base)
            model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
        except Exception as exc:  # noqa: BLE001 - name the folder that failed
            raise TrainingError(f"cannot load a cross-encoder base from {base}: {exc}") from exc
        metrics: dict[str, Any] = {"train_queries": len(train_q), "eval_queries": len(eval_q), "base_model": base,
                                   "loss_fn": cfg.loss}
        eval_groups = {q: groups[q] for q in eval_q}
        if eval_groups:
            metrics["eval_ndcg_before"] = _eval_ndcg(model, tok, eval_groups, cfg.max_length)
        metrics |= _fit(model, tok, {q: groups[q] for q in train_q}, cfg, progress)
        if eval_groups:
            metrics["eval_ndcg_after"] = _eval_ndcg(model, tok, eval_groups, cfg.max_length)
        out = Path(output_dir).expanduser().resolve() / "model"
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out)
        tok.save_pretrained(out)
        return TrainResult(model_path=str(out), metrics=metrics, output_dir=str(out.parent))


def train_reranker(data_path: str, output_dir: str, base_model: str | None = None,
                   config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Entry point of the training worker (a ``callable`` spec): progress goes out as events."""
    result = RerankerTrainer(config).train(data_path, output_dir, base_model, config, progress=emit_event)
    return {"model_path": result.model_path, "metrics": result.metrics}


def _default_base() -> str:
    from tuneloop.models.embed import MiniLMEmbedder

    return MiniLMEmbedder.default_path()


def _split(queries: list[str], cfg: RerankerConfig) -> tuple[list[str], list[str]]:
    order = sorted(queries)
    random.Random(cfg.seed).shuffle(order)
    n_eval = int(round(len(order) * cfg.val_fraction))
    return order[n_eval:], order[:n_eval]


def _logits(model, tok, queries: list[str], docs: list[str], max_length: int):
    enc = tok(queries, docs, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return model(**enc).logits[:, 0]


def _eval_ndcg(model, tok, groups: dict[str, list[tuple[str, float]]], max_length: int) -> float:
    import torch

    from tuneloop.evaluate.retrieval_metrics import ndcg_at_k

    model.eval()
    total = 0.0
    with torch.inference_mode():
        for q, docs in groups.items():
            scores = _logits(model, tok, [q] * len(docs), [d for d, _ in docs], max_length).tolist()
            ranked = [str(i) for i in sorted(range(len(docs)), key=lambda i: -scores[i])]
            total += ndcg_at_k(ranked, {str(i): s for i, (_, s) in enumerate(docs)}, k=10)
    return total / max(1, len(groups))


def _plan(groups: dict[str, list[tuple[str, float]]], cfg: RerankerConfig) -> list[list[tuple[str, str, float]]]:
    """Batches: rows (bce) or whole query groups (listwise)."""
    rng = random.Random(cfg.seed)
    if cfg.loss == "listwise":
        units = [[(q, d, s) for d, s in docs] for q, docs in groups.items() if len(docs) > 1 and any(s for _, s in docs)]
    else:
        units = [[(q, d, s)] for q, docs in groups.items() for d, s in docs]
    if not units:
        raise DatasetError("no usable reranker rows (listwise needs queries with several documents and a relevant one)")

    def epoch() -> list[list[tuple[str, str, float]]]:
        order = units[:]
        rng.shuffle(order)
        return [[r for u in order[i:i + cfg.batch_size] for r in u] for i in range(0, len(order), cfg.batch_size)]

    if cfg.max_steps > 0:
        plan: list = []
        while len(plan) < cfg.max_steps:
            plan += epoch()
        return plan[:cfg.max_steps]
    return [b for _ in range(cfg.epochs) for b in epoch()]


def _loss(logits, batch: list[tuple[str, str, float]], kind: str):
    import torch

    target = torch.tensor([s for _, _, s in batch], dtype=logits.dtype)
    if kind == "bce":
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    losses, start = [], 0
    while start < len(batch):  # one softmax per query group (groups are contiguous in a batch)
        end = start
        while end < len(batch) and batch[end][0] == batch[start][0]:
            end += 1
        t = target[start:end]
        losses.append(-(t / t.sum() * torch.log_softmax(logits[start:end], 0)).sum())
        start = end
    return torch.stack(losses).mean()


def _fit(model, tok, groups, cfg: RerankerConfig, progress: ProgressFn | None) -> dict[str, Any]:
    import torch

    plan = _plan(groups, cfg)
    total = len(plan)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    warm = max(1, int(total * cfg.warmup_ratio))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm))))
    model.train()
    losses, t0 = [], time.perf_counter()
    for step, batch in enumerate(plan, 1):
        logits = _logits(model, tok, [q for q, _, _ in batch], [d for _, d, _ in batch], cfg.max_length)
        loss = _loss(logits, batch, cfg.loss)
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
        raise TrainingError(f"reranker training produced no finite loss ({len(losses)} steps)")
    k = max(1, len(losses) // 5)
    return {"steps": len(losses), "train_loss_first": sum(losses[:k]) / k, "train_loss_last": sum(losses[-k:]) / k,
            "train_seconds": round(time.perf_counter() - t0, 2)}
