"""``TRLConfig``: every knob of a LoRA SFT / DPO / KTO run, validated in one place.

>>> cfg = TRLConfig(method="dpo", lora_r=8, learning_rate=5e-5, max_steps=20)
>>> cfg.loss_type            # DPO with an SFT term: plain DPO on few pairs collapses answers
['sigmoid', 'sft']
>>> TRLConfig(method="ppo")
Traceback (most recent call last):
...
tuneloop.errors.ConfigError: method must be one of ['dpo', 'kto', 'sft'], not 'ppo'
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from tuneloop.errors import ConfigError

METHODS = ("dpo", "kto", "sft")
_DEFAULT_LOSS = {"sft": "nll", "dpo": ["sigmoid", "sft"], "kto": "kto"}


def _f(default: Any, help: str, **kw: Any) -> Any:  # noqa: A002 - mirrors dataclasses' metadata idiom
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class TRLConfig:
    """Configuration of :class:`tuneloop.train.trl_trainer.TRLTrainer` (fields carry ``help``)."""

    method: str = _f("sft", "sft | dpo | kto")
    use_lora: bool = _f(True, "train a LoRA adapter (False: full fine-tune, saves a whole model)")
    lora_r: int = _f(16, "LoRA rank")
    lora_alpha: int = _f(32, "LoRA alpha (scaling = alpha / r)")
    lora_dropout: float = _f(0.05, "dropout on the LoRA input")
    target_modules: Any = _f("all-linear", "modules that get LoRA: 'all-linear' or a list like ['q_proj','v_proj']")
    learning_rate: float = _f(2e-4, "peak learning rate")
    lr_scheduler: str = _f("linear", "transformers scheduler name: linear | cosine | constant | ...")
    warmup_steps: float = _f(0, "warmup steps (an int) or ratio of total steps (a float < 1)")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    beta: float = _f(0.1, "DPO/KTO temperature of the implicit reward")
    loss_type: Any = _f(None, "TRL loss; default sft: 'nll', dpo: ['sigmoid','sft'], kto: 'kto'")
    epochs: float = _f(1.0, "passes over the training data (ignored when max_steps > 0)")
    max_steps: int = _f(-1, "stop after this many optimizer steps (-1: run the epochs)")
    batch_size: int = _f(4, "examples per device per step")
    grad_accum: int = _f(1, "gradient accumulation steps (effective batch = batch_size * grad_accum)")
    max_length: int = _f(512, "truncate examples to this many tokens")
    seed: int = _f(0, "random seed (data order, LoRA init)")
    bf16: bool | None = _f(None, "bf16 mixed precision; None: on only where a GPU supports it")
    device: str = _f("auto", "auto | cpu | cuda")
    num_threads: int | None = _f(None, "torch CPU threads (None: torch's default)")
    gradient_checkpointing: bool = _f(False, "trade compute for memory (useful on a GPU with big models)")
    val_fraction: float = _f(0.0, "hold this fraction of rows out for validation loss")
    eval_path: str | None = _f(None, "a separate validation JSONL (overrides val_fraction)")
    eval_steps: int = _f(0, "evaluate every N steps (0: only at the end)")
    save_steps: int = _f(0, "checkpoint every N steps (0: no checkpoints)")
    save_total_limit: int = _f(2, "keep at most this many checkpoints")
    resume: bool = _f(True, "resume from the newest checkpoint in output_dir if there is one")
    logging_steps: int = _f(1, "log loss every N steps")
    assistant_only_loss: bool = _f(False, "SFT: loss on assistant tokens only (template needs generation tags)")
    completion_only_loss: bool | None = _f(None, "SFT prompt/completion data: loss on the completion only")
    packing: bool = _f(False, "SFT: pack short examples into full-length rows")
    desirable_weight: float = _f(1.0, "KTO: weight of desirable examples")
    undesirable_weight: float = _f(1.0, "KTO: weight of undesirable examples")
    extra: dict = _f({}, "more keyword arguments passed to TRL's SFTConfig/DPOConfig/KTOConfig as is")

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {list(METHODS)}, not {self.method!r}")
        if self.loss_type is None:
            self.loss_type = _DEFAULT_LOSS[self.method]
        self._check_positive("lora_r", "lora_alpha", "learning_rate", "batch_size", "grad_accum", "max_length",
                             "logging_steps")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"lora_dropout must be in [0, 1), not {self.lora_dropout}")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"val_fraction must be in [0, 1), not {self.val_fraction}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ConfigError(f"max_steps must be -1 (use epochs) or > 0, not {self.max_steps}")
        if self.max_steps == -1 and self.epochs <= 0:
            raise ConfigError(f"epochs must be > 0 when max_steps is -1, not {self.epochs}")
        if self.beta <= 0:
            raise ConfigError(f"beta must be > 0, not {self.beta}")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ConfigError(f"device must be auto, cpu or cuda, not {self.device!r}")
        if self.method == "dpo" and isinstance(self.loss_type, str):
            self.loss_type = [self.loss_type]  # TRL 1.16 DPOConfig.loss_type is a list
        if not (self.target_modules == "all-linear" or isinstance(self.target_modules, str | list)):
            raise ConfigError("target_modules must be 'all-linear', a module name or a list of names")

    def _check_positive(self, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            if not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"{name} must be a positive number, not {value!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "TRLConfig":
        """Build from a mapping; unknown keys are an error that lists the known ones."""
        data = dict(data or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown TRL config key(s) {unknown}; known: {sorted(known)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def help(cls) -> dict[str, str]:
        """Field name -> help text (for CLI flags and docs)."""
        return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}


__all__ = ["TRLConfig", "METHODS"]
