"""LLaMA-Factory as a training backend: seed 003's ``llamafactory-cli train`` flow.

:func:`write_llamafactory_config` converts a tuneloop JSONL (TRL formats) into LLaMA-Factory's
ShareGPT layout with a ``dataset_info.json``, and writes the training YAML; :func:`llamafactory_trainer`
is a :class:`~tuneloop.train.command.CommandTrainer` running ``llamafactory-cli train <yaml>``.

>>> t = llamafactory_trainer("dpo")
>>> t.render("/d.jsonl", "/m", "/o", "/o/llamafactory.yaml")
['llamafactory-cli', 'train', '/o/llamafactory.yaml']

Multi-GPU on one node: LLaMA-Factory launches torchrun itself when ``FORCE_TORCHRUN=1``::

    llamafactory_trainer("sft", env={"FORCE_TORCHRUN": "1", "NPROC_PER_NODE": "8"})

Multi-node with accelerate (on every node, with its rank)::

    CommandTrainer("accelerate launch --config_file accelerate.yaml --num_machines 2 "
                   "--machine_rank $RANK --main_process_ip $MASTER --main_process_port 29500 "
                   "-m llamafactory.launcher {config_path}", prepare="llamafactory", method="dpo")
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tuneloop.errors import DatasetError
from tuneloop.train.base import config_to_dict
from tuneloop.train.command import CommandTrainer

DATASET_NAME = "tuneloop_train"
_TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
         "system_tag": "system"}


def _as_messages(value: Any, role: str) -> list[dict[str, str]]:
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, list):
        return [{"role": m["role"], "content": m["content"]} for m in value]
    raise DatasetError(f"expected text or a message list, got {type(value).__name__}")


def convert_row(row: dict[str, Any], method: str) -> dict[str, Any]:
    """One TRL-format row -> LLaMA-Factory ShareGPT row (role/content tags)."""
    if method == "sft":
        if "messages" in row:
            return {"messages": _as_messages(row["messages"], "user")}
        return {"messages": _as_messages(row["prompt"], "user") + _as_messages(row["completion"], "assistant")}
    if method == "dpo":
        # LLaMA-Factory wants the last turn as single chosen/rejected messages.
        return {"messages": _as_messages(row.get("prompt", []), "user"),
                "chosen": _as_messages(row["chosen"], "assistant")[-1],
                "rejected": _as_messages(row["rejected"], "assistant")[-1]}
    if method == "kto":
        return {"messages": _as_messages(row["prompt"], "user") + _as_messages(row["completion"], "assistant"),
                "label": bool(row["label"])}
    raise DatasetError(f"LLaMA-Factory export supports sft, dpo and kto, not {method!r}")


def dataset_info(method: str, file_name: str) -> dict[str, Any]:
    columns: dict[str, str] = {"messages": "messages"}
    info: dict[str, Any] = {"file_name": file_name, "formatting": "sharegpt", "tags": _TAGS}
    if method == "dpo":
        info["ranking"] = True
        columns.update(chosen="chosen", rejected="rejected")
    if method == "kto":
        columns["kto_tag"] = "label"
    info["columns"] = columns
    return {DATASET_NAME: info}


def llamafactory_yaml(cfg: dict[str, Any], *, base_model: str, dataset_dir: str, output_dir: str) -> dict[str, Any]:
    """The LLaMA-Factory training arguments for a tuneloop config dict (TRLConfig fields)."""
    method = cfg.get("method", "sft")
    loss = cfg.get("loss_type") or []
    loss = [loss] if isinstance(loss, str) else list(loss)
    targets = cfg.get("target_modules", "all-linear")
    y: dict[str, Any] = {
        "model_name_or_path": base_model, "stage": method, "do_train": True,
        "finetuning_type": "lora" if cfg.get("use_lora", True) else "full",
        "lora_rank": cfg.get("lora_r", 16), "lora_alpha": cfg.get("lora_alpha", 32),
        "lora_dropout": cfg.get("lora_dropout", 0.05),
        "lora_target": "all" if targets == "all-linear" else ",".join([targets] if isinstance(targets, str) else targets),
        "dataset": DATASET_NAME, "dataset_dir": dataset_dir, "template": cfg.get("extra", {}).get("template", "chatml"),
        "cutoff_len": cfg.get("max_length", 512), "overwrite_cache": True,
        "output_dir": output_dir, "logging_steps": cfg.get("logging_steps", 1),
        "save_steps": cfg.get("save_steps") or 500, "overwrite_output_dir": True, "report_to": "none",
        "per_device_train_batch_size": cfg.get("batch_size", 4),
        "gradient_accumulation_steps": cfg.get("grad_accum", 1),
        "learning_rate": cfg.get("learning_rate", 2e-4), "num_train_epochs": cfg.get("epochs", 1.0),
        "lr_scheduler_type": cfg.get("lr_scheduler", "linear"), "seed": cfg.get("seed", 0),
        "bf16": bool(cfg.get("bf16")),
    }
    if cfg.get("max_steps", -1) and cfg.get("max_steps", -1) > 0:
        y["max_steps"] = cfg["max_steps"]
    if cfg.get("val_fraction"):
        y.update(val_size=cfg["val_fraction"], eval_strategy="steps", eval_steps=cfg.get("eval_steps") or 50)
    if method in ("dpo", "kto"):
        y["pref_beta"] = cfg.get("beta", 0.1)
    if method == "dpo":
        y["pref_loss"] = next((l for l in loss if l != "sft"), "sigmoid")
        y["pref_ftx"] = 1.0 if "sft" in loss else 0.0  # LLaMA-Factory's SFT term in the DPO loss
    return y


def write_llamafactory_config(dataset_path: str | os.PathLike, output_dir: str | os.PathLike, base_model: str,
                              config: Any) -> Path:
    """Write ``<output_dir>/lf_data/`` (data + dataset_info.json) and ``<output_dir>/llamafactory.yaml``."""
    import yaml

    cfg = config_to_dict(config)
    method = cfg.get("method", "sft")
    out = Path(output_dir)
    data_dir = out / "lf_data"
    data_dir.mkdir(parents=True, exist_ok=True)
    rows = 0
    with open(dataset_path, encoding="utf-8") as src, open(data_dir / f"{DATASET_NAME}.jsonl", "w") as dst:
        for n, line in enumerate(src, 1):
            if not line.strip():
                continue
            try:
                dst.write(json.dumps(convert_row(json.loads(line), method), ensure_ascii=False) + "\n")
            except (ValueError, KeyError) as exc:
                raise DatasetError(f"{dataset_path}:{n}: cannot convert row for LLaMA-Factory: {exc}") from exc
            rows += 1
    if not rows:
        raise DatasetError(f"{dataset_path} has no rows")
    (data_dir / "dataset_info.json").write_text(json.dumps(dataset_info(method, f"{DATASET_NAME}.jsonl"), indent=2))
    path = out / "llamafactory.yaml"
    path.write_text(yaml.safe_dump(llamafactory_yaml(cfg, base_model=base_model, dataset_dir=str(data_dir),
                                                     output_dir=str(out)), sort_keys=False))
    return path


def llamafactory_trainer(method: str = "sft", *, cli: str = "llamafactory-cli",
                         env: dict[str, str] | None = None) -> CommandTrainer:
    """A command trainer for ``llamafactory-cli train`` (the YAML is written per run)."""
    return CommandTrainer(f"{cli} train {{config_path}}", name="llamafactory", method=method, env=env,
                          prepare="llamafactory")


__all__ = ["llamafactory_trainer", "write_llamafactory_config", "llamafactory_yaml", "convert_row", "dataset_info"]
