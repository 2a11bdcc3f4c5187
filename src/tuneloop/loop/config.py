"""``LoopConfig``: everything one continuous-learning loop needs, seed 002's JSON keys included.

>>> cfg = LoopConfig.from_dict({"check_interval_seconds": 60, "trigger_config": {"min_new_samples": 50}})
>>> cfg.trigger_config.min_new_samples
50
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tuneloop.errors import ConfigError
from tuneloop.loop.cost import CostConfig
from tuneloop.loop.levers import LeverPolicy
from tuneloop.loop.policy import UpdatePolicy
from tuneloop.loop.triggers import TriggerConfig
from tuneloop.notify.webhooks import WebhookConfig


@dataclass
class LoopConfig:
    """One loop. Dict-valued sections are validated by the package that owns them."""

    db_path: str | None = field(default=None, metadata={"help": "SQLite file (default ./.tuneloop/tuneloop.db)"})
    db_url: str | None = field(default=None, metadata={"help": "database URL; overrides db_path"})
    output_dir: str = field(default="./.tuneloop/runs", metadata={"help": "datasets, adapters and reports"})
    data_dir: str = field(default="./.tuneloop", metadata={"help": "model cache and other files"})
    check_interval_seconds: float = field(default=3600.0, metadata={"help": "seconds between trigger checks"})
    trigger_config: TriggerConfig = field(default_factory=TriggerConfig)
    generator_config: dict[str, Any] = field(default_factory=dict, metadata={"help": "DataGeneratorConfig fields"})
    ab_test_config: dict[str, Any] = field(default_factory=dict, metadata={"help": "ABTestConfig fields"})
    train_config: dict[str, Any] = field(default_factory=dict, metadata={"help": "trainer fields (method, max_steps, lora_r, ...)"})
    enable_ab_testing: bool = field(default=True, metadata={"help": "test challengers online before promotion"})
    enable_auto_promotion: bool = field(default=True, metadata={"help": "promote winners without a human"})
    base_model: str = field(default="smollm2", metadata={"help": "'smollm2', 'tiny', or a local model folder"})
    golden_set: str = field(default="default", metadata={"help": "golden set that gates candidates"})
    gate_threshold: float = field(default=0.0, metadata={"help": "minimum golden pass rate of a candidate"})
    gate_alpha: float = field(default=0.05, metadata={"help": "significance of the paired regression test"})
    dataset_kinds: tuple[str, ...] = field(default=("sft",), metadata={"help": "datasets built per cycle: sft, dpo"})
    max_cycles: int | None = field(default=None, metadata={"help": "stop run_loop after this many cycles"})
    require_approval: bool = field(default=False, metadata={"help": "stop before traffic until an admin approves"})
    retention_days: float | None = field(default=None, metadata={"help": "the daemon deletes interactions older than this"})
    update_policy: UpdatePolicy = field(default_factory=UpdatePolicy, metadata={
        "help": "min_interval per lever, freeze_windows, max_promotions (loop/policy.py)"})
    cost_config: CostConfig = field(default_factory=CostConfig, metadata={
        "help": "prices (cpu_hour, gpu_hour, per_1k_judge_tokens, ...) and skip_finetune_below (loop/cost.py)"})
    webhooks: list[WebhookConfig] = field(default_factory=list, metadata={
        "help": "[{url, format: json|slack, events, secret}] notified on promotion, rollback, gate failure, drift, approval"})
    levers: LeverPolicy = field(default_factory=LeverPolicy, metadata={
        "help": "which lever a cycle pulls: {order: [prompt, adapter], prompt_min_gain, prompt_patience} (loop/levers.py)"})
    prompt_config: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "the prompt lever: {candidates: prompts.yaml, strategy: best|next, rewriter: {...}} (train/prompt.py)"})

    def __post_init__(self) -> None:
        if isinstance(self.trigger_config, dict):
            self.trigger_config = TriggerConfig.from_dict(self.trigger_config)
        if not isinstance(self.update_policy, UpdatePolicy):
            self.update_policy = UpdatePolicy.from_dict(self.update_policy)
        if not isinstance(self.cost_config, CostConfig):
            self.cost_config = CostConfig.from_dict(self.cost_config)
        if not isinstance(self.webhooks, (list, tuple)):
            raise ConfigError(f"webhooks must be a list of {{url, format, events, secret}}, got {self.webhooks!r}")
        self.webhooks = [WebhookConfig.from_dict(h) for h in self.webhooks]
        if not isinstance(self.levers, LeverPolicy):
            self.levers = LeverPolicy.from_dict(self.levers)
        if "prompt" in self.levers.order:
            from tuneloop.train.prompt import PromptTrainerConfig

            PromptTrainerConfig.from_dict(self.prompt_config)  # validated now: a bad candidate stops the daemon's start
        if self.check_interval_seconds <= 0:
            raise ConfigError(f"check_interval_seconds must be > 0, got {self.check_interval_seconds}")
        if not 0.0 <= self.gate_threshold <= 1.0:
            raise ConfigError(f"gate_threshold must be within [0, 1], got {self.gate_threshold}")
        bad = [k for k in self.dataset_kinds if k not in ("sft", "dpo", "kto")]
        if bad:
            raise ConfigError(f"dataset_kinds: unknown kind(s) {bad}; use sft, dpo or kto")
        self.dataset_kinds = tuple(self.dataset_kinds)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LoopConfig":
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"unknown loop config keys: {', '.join(unknown)}")
        return cls(**data)

    @classmethod
    def from_file(cls, path: str | Path) -> "LoopConfig":
        """Read seed 002's JSON config (or TOML/YAML via tuneloop.config's reader)."""
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"loop config file {str(p)!r} does not exist")
        try:
            if p.suffix.lower() == ".json":
                data = json.loads(p.read_text())
            else:
                from tuneloop.config import _read_file

                data = _read_file(p)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{p}: invalid JSON at line {exc.lineno}: {exc.msg}") from exc
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(f"{p}: {exc.message}") from exc

    def database_url(self) -> str:
        from tuneloop.store.db import resolve_url

        return resolve_url(self.db_url) if self.db_url else resolve_url(path=self.db_path)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["dataset_kinds"] = list(self.dataset_kinds)
        d["update_policy"] = self.update_policy.to_dict()
        d["webhooks"] = [h.to_dict() for h in self.webhooks]  # secrets and URL paths are not echoed
        d["levers"] = self.levers.to_dict()
        return d
