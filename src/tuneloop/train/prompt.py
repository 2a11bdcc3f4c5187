"""The ``prompt`` trainer: a candidate *prompt* instead of new weights, behind the trainer protocol.

Where candidates come from:

1. ``candidates``: a list the user supplies (a YAML file, or inline). Candidates already
   tried (any registered version carried that prompt, or an earlier prompt run scored it)
   are skipped.
2. ``rewriter``: any model backend rewrites the champion's system prompt, shown the failure
   cases of the period (the dataset file: one :class:`~tuneloop.prompts.failures.FailureCase`
   per JSON line: negative feedback, judge failures, failure categories).

Which one wins: ``strategy="next"`` takes the first untried candidate (the list order is the
user's preference; a rewrite comes after the list); ``strategy="best"`` scores every fresh
candidate and the champion's own prompt with ``score_fn`` (the loop passes the golden-set pass
rate) and keeps the best, saying in its metrics whether it beats the champion's prompt.
Choosing on the golden set and then gating on it is optimistic; the online A/B test is the
unbiased check, and ``select_on`` can name a separate golden set to choose on.

The result is ``<output_dir>/prompt.json`` (a :class:`~tuneloop.prompts.spec.PromptSpec`);
the run is recorded in ``train_runs`` with method ``prompt`` like any other training.

>>> cfg = PromptTrainerConfig(candidates=["Be brief.", "Answer with the number only."], strategy="next")
>>> trainer = PromptTrainer(cfg, tried=[PromptSpec(system="Be brief.").fingerprint()])
>>> [c.system for _, c in trainer.fresh_candidates([])]
['Answer with the number only.']
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tuneloop.errors import ConfigError, TrainingError
from tuneloop.prompts.candidates import load_candidates, untried
from tuneloop.prompts.failures import FailureCase, summarize
from tuneloop.prompts.spec import PromptSpec
from tuneloop.train.base import ProgressFn, TrainResult

__all__ = ["PromptTrainer", "PromptTrainerConfig", "read_failures", "write_failures"]

ScoreFn = Callable[[PromptSpec | None], float]
STRATEGIES = ("next", "best")


@dataclass
class PromptTrainerConfig:
    """Where prompt candidates come from and how one is chosen. ``LoopConfig.prompt_config`` holds these."""

    candidates: str | list[Any] | None = field(default=None, metadata={
        "help": "YAML/JSON file of candidate prompts, or the list itself"})
    strategy: str = field(default="best", metadata={
        "help": "next: first untried candidate; best: score all on the golden set, keep the best"})
    rewriter: dict[str, Any] | None = field(default=None, metadata={
        "help": "model that rewrites the champion's prompt: {version: champion} or a version row "
                "({backend: openai, base_model: m, params: {base_url: ...}})"})
    instructions: str | None = field(default=None, metadata={"help": "owner's guidance given to the rewriter"})
    max_failures: int = field(default=20, metadata={"help": "failure cases shown to the rewriter"})
    select_on: str | None = field(default=None, metadata={
        "help": "golden set that ranks candidates under 'best' (default: the gate's golden set)"})

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"prompt strategy {self.strategy!r} is not one of {', '.join(STRATEGIES)}")
        if self.max_failures < 0:
            raise ConfigError(f"prompt max_failures must be >= 0, got {self.max_failures}")
        if self.candidates is None and not self.rewriter:
            raise ConfigError("the prompt lever needs candidates (a YAML list of prompts) or a rewriter "
                              "(a model that rewrites the champion's prompt)")
        if self.rewriter is not None:
            if not isinstance(self.rewriter, Mapping) or not (self.rewriter.get("version") or self.rewriter.get("backend")):
                raise ConfigError("prompt rewriter must name a registered version ({version: champion}) or a "
                                  "backend ({backend: openai, base_model: ..., params: {base_url: ...}})")
        self.load()  # a bad candidate fails the config, before any cycle starts

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "PromptTrainerConfig":
        data = dict(data or {})
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"unknown prompt_config keys: {', '.join(unknown)} "
                              f"(known: {', '.join(cls.__dataclass_fields__)})")
        return cls(**data)

    def load(self) -> list[PromptSpec]:
        """The candidate list, read and validated."""
        return load_candidates(self.candidates)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def write_failures(cases: Iterable[FailureCase], path: str | os.PathLike) -> int:
    """The prompt trainer's dataset file: one failure case per JSON line. Returns the count."""
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for c in cases:
            f.write(json.dumps(c.to_dict(), ensure_ascii=False) + "\n")
            n += 1
    return n


def read_failures(path: str | os.PathLike | None) -> list[FailureCase]:
    if not path or not Path(path).exists():
        return []
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                d = json.loads(line)
                out.append(FailureCase(**{**d, "comments": tuple(d.get("comments") or ())}))
    return out


class PromptTrainer:
    """Produce a candidate prompt (see the module docstring). Runs in-process: ``score_fn`` and
    the rewriter use the caller's live model pool and database."""

    name = "prompt"
    method = "prompt"

    def __init__(self, config: PromptTrainerConfig | Mapping[str, Any], *, base: PromptSpec | None = None,
                 tried: Iterable[str] = (), score_fn: ScoreFn | None = None, rewriter: Any = None) -> None:
        self.config = config if isinstance(config, PromptTrainerConfig) else PromptTrainerConfig.from_dict(config)
        self.base, self.tried = base, set(tried)
        self.score_fn, self.rewriter = score_fn, rewriter
        if self.config.rewriter and rewriter is None and not self.config.load():
            raise ConfigError("prompt_config names a rewriter but no rewriter backend was given to the trainer")

    def subprocess_spec(self) -> dict[str, Any] | None:
        return None

    def fresh_candidates(self, failures: list[FailureCase]) -> list[tuple[str, PromptSpec]]:
        """(source, spec) of every candidate not tried yet: the list's, then a rewrite."""
        tried = self.tried | ({self.base.fingerprint()} if self.base else set())
        out = [("list", c) for c in untried(self.config.load(), tried)]
        if self.rewriter is not None and (self.config.strategy == "best" or not out):
            from tuneloop.prompts.rewrite import rewrite_prompt

            spec = rewrite_prompt(self.rewriter, self.base, failures[: self.config.max_failures],
                                  instructions=self.config.instructions)
            if spec.fingerprint() not in tried:
                out.append(("rewrite", spec))
        return out

    def train(self, dataset_path: str | os.PathLike | None, output_dir: str | os.PathLike, base_model: str | None,
              config: Any = None, *, progress: ProgressFn | None = None) -> TrainResult:
        out = Path(output_dir).expanduser().resolve()
        out.mkdir(parents=True, exist_ok=True)
        failures = read_failures(dataset_path)
        # 1. the candidates: untried list entries and/or a rewrite of the champion's prompt
        pool = self.fresh_candidates(failures)
        if not pool:
            raise TrainingError("no untried prompt candidate is left and no rewriter produced a new one")
        metrics: dict[str, Any] = {"strategy": self.config.strategy, "considered": len(pool),
                                   "tried": [c.fingerprint() for _, c in pool], "failures": summarize(failures)}
        # 2. the choice: the first, or the best by score_fn against the champion's own prompt
        if self.config.strategy == "next" or self.score_fn is None:
            source, chosen = pool[0]
        else:
            source, chosen = self._best(pool, metrics, progress)
        metrics.update(source=source, chosen=chosen.label(), fingerprint=chosen.fingerprint())
        # 3. the artifact
        path = out / "prompt.json"
        path.write_text(json.dumps(chosen.to_dict(), indent=2, ensure_ascii=False), encoding="utf-8")
        return TrainResult(prompt_path=str(path), metrics=metrics, output_dir=str(out))

    def _best(self, pool: list[tuple[str, PromptSpec]], metrics: dict[str, Any],
              progress: ProgressFn | None) -> tuple[str, PromptSpec]:
        assert self.score_fn is not None
        total = len(pool) + 1
        champion_score = float(self.score_fn(self.base))
        scored = []
        for i, (source, spec) in enumerate(pool, 1):
            scored.append((float(self.score_fn(spec)), -i, source, spec))  # ties: the earlier candidate
            if progress:
                progress({"event": "progress", "step": i + 1, "total": total})
        scored.sort(key=lambda t: (t[0], t[1]), reverse=True)
        best_score, _, source, spec = scored[0]
        metrics.update(champion_score=champion_score, chosen_score=best_score, improves=best_score > champion_score,
                       scores=[{"label": s.label(), "source": src, "score": sc} for sc, _, src, s in scored])
        return source, spec
