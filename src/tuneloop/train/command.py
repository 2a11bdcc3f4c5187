"""The ``command`` trainer: any command line, with placeholders filled in per run.

Placeholders: ``{data_path}`` ``{base_model}`` ``{output_dir}`` ``{config_path}`` ``{python}``.
The command is a string (split like a shell would, but run without one), a list of
arguments, or a JSON list of arguments.
The run's config is written to ``{config_path}`` (JSON, or YAML when ``config_format="yaml"``)
before the command starts. After a zero exit the trainer looks in ``output_dir`` for what the
command made: a PEFT adapter (``adapter_config.json``) or a full model (``config.json``), at
the top or in ``adapter/`` / ``model/``; metrics from ``metrics.json``, ``all_results.json``
or ``train_results.json`` (what Hugging Face Trainer and LLaMA-Factory write) and the loss
curve from ``trainer_state.json``.

>>> t = CommandTrainer("python train.py --data {data_path} --out {output_dir} --cfg {config_path}")
>>> t.render("/d.jsonl", "/m", "/o", "/o/c.json")
['python', 'train.py', '--data', '/d.jsonl', '--out', '/o', '--cfg', '/o/c.json']

Multi-GPU and multi-node with accelerate (the TRL trainer under ``accelerate launch``)::

    CommandTrainer("accelerate launch --multi_gpu --num_processes 8 --num_machines 2 "
                   "--machine_rank $RANK --main_process_ip $MASTER --main_process_port 29500 "
                   "-m tuneloop.train.trl_trainer --data {data_path} --base-model {base_model} "
                   "--output-dir {output_dir} --config {config_path}")
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from tuneloop.errors import ConfigError, TrainingError
from tuneloop.train.base import ProgressFn, TrainResult, config_to_dict

PLACEHOLDERS = ("data_path", "base_model", "output_dir", "config_path", "python")
_METRIC_FILES = ("metrics.json", "all_results.json", "train_results.json")


def find_artifact(output_dir: Path) -> tuple[str | None, str | None]:
    """(adapter_path, model_path) found in ``output_dir``: top level first, then adapter/ and model/."""
    for folder in (output_dir, output_dir / "adapter", output_dir / "model"):
        if (folder / "adapter_config.json").exists():
            return str(folder), None
        if (folder / "config.json").exists():
            return None, str(folder)
    return None, None


def read_metrics(output_dir: Path) -> dict[str, Any]:
    """Metrics a command left behind (HF Trainer / LLaMA-Factory conventions), first and last loss too."""
    metrics: dict[str, Any] = {}
    for name in _METRIC_FILES:
        path = output_dir / name
        if path.exists():
            try:
                data = json.loads(path.read_text())
            except ValueError:
                continue
            if isinstance(data, dict):
                metrics.update({k: v for k, v in data.items() if isinstance(v, int | float | str | None)})
    state = output_dir / "trainer_state.json"
    if state.exists():
        try:
            history = json.loads(state.read_text()).get("log_history", [])
        except ValueError:
            history = []
        losses = [h["loss"] for h in history if "loss" in h]
        if losses:
            metrics.setdefault("train_loss_first", losses[0])
            metrics.setdefault("train_loss_last", losses[-1])
    if "train_loss" in metrics:
        metrics.setdefault("train_loss_last", metrics["train_loss"])
    return metrics


def resolve_for_command(base_model: str | None) -> str:
    """A local folder for tuneloop's names ('smollm2', 'tiny'), anything else as given."""
    if not base_model:
        return ""
    try:
        from tuneloop.models.resolve import resolve_model

        return str(resolve_model(base_model))
    except ConfigError:
        return str(base_model)  # e.g. a hub id that the external tool fetches itself


class CommandTrainer:
    """Train by running a command line (LLaMA-Factory, a cluster job, ``accelerate launch``, ...)."""

    def __init__(self, command: str | list[str], *, name: str = "command", method: str = "command",
                 env: dict[str, str] | None = None, cwd: str | None = None, config_format: str = "json",
                 prepare: str | None = None) -> None:
        if not command:
            raise ConfigError("a command trainer needs a command line")
        if isinstance(command, str) and command.lstrip().startswith("["):
            try:  # a JSON list: argv given exactly, no shell-style splitting
                command = [str(x) for x in json.loads(command)]
            except ValueError as exc:
                raise ConfigError(f"the command looks like a JSON list but is not one: {exc}") from exc
        if config_format not in ("json", "yaml"):
            raise ConfigError(f"config_format must be json or yaml, not {config_format!r}")
        self.command = command
        self.name, self.method = name, method
        self.env, self.cwd, self.config_format = dict(env or {}), cwd, config_format
        self.prepare = prepare  # a named preparation step ("llamafactory") run before the command

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "CommandTrainer":
        return cls(spec["command"], name=spec.get("name", "command"), method=spec.get("method", "command"),
                   env=spec.get("env"), cwd=spec.get("cwd"), config_format=spec.get("config_format", "json"),
                   prepare=spec.get("prepare"))

    def subprocess_spec(self) -> dict[str, Any]:
        return {"kind": "command", "command": self.command, "name": self.name, "method": self.method,
                "env": self.env, "cwd": self.cwd, "config_format": self.config_format, "prepare": self.prepare}

    def render(self, data_path: str, base_model: str, output_dir: str, config_path: str) -> list[str]:
        """The argv with placeholders filled in (each argument formatted on its own: no shell)."""
        values = {"data_path": data_path, "base_model": base_model, "output_dir": output_dir,
                  "config_path": config_path, "python": sys.executable}
        parts = shlex.split(self.command) if isinstance(self.command, str) else list(self.command)
        out = []
        for part in parts:
            part = os.path.expandvars(part)
            # Plain replacement, not str.format: arguments may hold JSON or other braces.
            for key, value in values.items():
                part = part.replace("{" + key + "}", value)
            out.append(part)
        return out

    def _write_config(self, config: Any, output_dir: Path, data_path: str, base_model: str) -> Path:
        if self.prepare == "llamafactory":
            from tuneloop.train.llamafactory import write_llamafactory_config

            return write_llamafactory_config(data_path, output_dir, base_model, config)
        cfg = config_to_dict(config)
        if self.config_format == "yaml":
            import yaml

            path = output_dir / "train_config.yaml"
            path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        else:
            path = output_dir / "train_config.json"
            path.write_text(json.dumps(cfg, indent=2, default=str))
        return path

    def train(self, dataset_path: str | os.PathLike, output_dir: str | os.PathLike, base_model: str | None,
              config: Any = None, *, progress: ProgressFn | None = None) -> TrainResult:
        out = Path(output_dir).expanduser().resolve()
        out.mkdir(parents=True, exist_ok=True)
        data = str(Path(dataset_path).expanduser().resolve())
        base = resolve_for_command(base_model)
        config_path = self._write_config(config, out, data, base)
        argv = self.render(data, base, str(out), str(config_path))
        print(f"$ {shlex.join(argv)}", flush=True)
        try:
            # Output flows to our stdout: inside the worker, that is the run's log file.
            rc = subprocess.call(argv, cwd=self.cwd, env={**os.environ, **self.env})
        except FileNotFoundError as exc:
            raise TrainingError(f"cannot start training command {argv[0]!r}: {exc}") from exc
        if rc != 0:
            raise TrainingError(f"training command {argv[0]!r} exited with code {rc}")
        adapter, model = find_artifact(out)
        if adapter is None and model is None:
            raise TrainingError(f"training command finished but left no adapter or model in {out}")
        return TrainResult(adapter_path=adapter, model_path=model, metrics=read_metrics(out), output_dir=str(out))


__all__ = ["CommandTrainer", "find_artifact", "read_metrics", "PLACEHOLDERS"]
