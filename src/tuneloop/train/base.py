"""The trainer protocol: every backend turns a dataset file into a candidate model.

    Trainer.train(dataset_path, output_dir, base_model, config) -> TrainResult

Backends: ``trl`` (SFT / DPO / KTO with a LoRA adapter, :mod:`tuneloop.train.trl_trainer`),
``command`` (any command line, :mod:`tuneloop.train.command`; LLaMA-Factory in
:mod:`tuneloop.train.llamafactory`), ``callable`` (seed 002's ``train_fn(data_path)``,
:mod:`tuneloop.train.callable`), ``prompt`` (a candidate prompt instead of weights,
:mod:`tuneloop.train.prompt`). :class:`tuneloop.train.runner.TrainingRunner` runs any of
them in a subprocess and records the run in ``train_runs``.

>>> r = TrainResult(adapter_path="runs/r1/adapter", metrics={"train_loss_last": 0.4})
>>> r.artifact
'runs/r1/adapter'
"""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from tuneloop.errors import TrainingError

# Lines a training subprocess prints on stdout to talk to the runner: ``@@tuneloop {json}``.
EVENT_PREFIX = "@@tuneloop "
ProgressFn = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class TrainResult:
    """What a finished training run produced: an adapter or a full model, and its metrics."""

    adapter_path: str | None = None
    model_path: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    log_path: str | None = None
    output_dir: str | None = None
    run_id: str | None = None
    prompt_path: str | None = None  # the prompt trainer's candidate (a PromptSpec as JSON)

    @property
    def artifact(self) -> str | None:
        """The adapter folder if there is one, else the model folder, else the prompt file."""
        return self.adapter_path or self.model_path or self.prompt_path

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainResult":
        known = {k: data.get(k) for k in ("adapter_path", "model_path", "log_path", "output_dir", "run_id",
                                          "prompt_path")}
        return cls(metrics=dict(data.get("metrics") or {}), **known)

    def require_artifact(self) -> "TrainResult":
        """Raise :class:`TrainingError` unless an adapter or model folder exists on disk."""
        path = self.artifact
        if not path or not Path(path).exists():
            raise TrainingError(f"training finished without a model: no adapter or model folder at {path!r}",
                                log_path=self.log_path)
        return self


@runtime_checkable
class Trainer(Protocol):
    """A training backend. ``name`` goes into ``train_runs.backend``; ``method`` into ``train_runs.method``."""

    name: str
    method: str

    def train(self, dataset_path: str | os.PathLike, output_dir: str | os.PathLike, base_model: str | None,
              config: Any = None, *, progress: ProgressFn | None = None) -> TrainResult:
        """Train on ``dataset_path``; write everything under ``output_dir``."""
        ...

    def subprocess_spec(self) -> dict[str, Any] | None:
        """How a worker process rebuilds this trainer (JSON), or None when it must run in-process."""
        ...


def emit_event(event: dict[str, Any]) -> None:
    """Print one event line for the runner (used inside the worker process)."""
    sys.stdout.write(EVENT_PREFIX + json.dumps(event, default=str) + "\n")
    sys.stdout.flush()


def config_to_dict(config: Any) -> dict[str, Any]:
    """A trainer config as a JSON-able dict (dataclass, mapping or None)."""
    if config is None:
        return {}
    if hasattr(config, "to_dict"):
        return dict(config.to_dict())
    if hasattr(config, "__dataclass_fields__"):
        return asdict(config)
    if isinstance(config, dict):
        return dict(config)
    raise TrainingError(f"a trainer config must be a dataclass or a dict, not {type(config).__name__}")


__all__ = ["Trainer", "TrainResult", "ProgressFn", "EVENT_PREFIX", "emit_event", "config_to_dict"]
