"""The ``trl`` trainer: LoRA SFT, DPO or KTO with TRL on JSONL files in TRL's own formats.

    SFT  {"messages": [{"role", "content"}, ...]}  or  {"prompt": ..., "completion": ...}  or  {"text": ...}
    DPO  {"prompt": [msgs] | str, "chosen": [msgs] | str, "rejected": [msgs] | str}
    KTO  {"prompt": [msgs] | str, "completion": [msgs] | str, "label": true | false}

A run does, in order: 1) load and check the rows, 2) split off validation rows, 3) load the
base model (fp32 on CPU, bf16 where a GPU supports it), 4) train a LoRA adapter with TRL,
resuming from the newest checkpoint, 5) save the adapter to ``<output_dir>/adapter`` and
return the metrics (first/last train loss, eval loss, steps, tokens/s, seconds).

>>> result = TRLTrainer().train("sft.jsonl", "runs/r1", "tiny", TRLConfig(max_steps=20))  # doctest: +SKIP
>>> result.metrics["train_loss_last"] < result.metrics["train_loss_first"]               # doctest: +SKIP
True

Multi-GPU / multi-node (the same code under accelerate; see also :mod:`tuneloop.train.command`)::

    accelerate launch --multi_gpu --num_processes 8 -m tuneloop.train.trl_trainer \\
        --data sft.jsonl --base-model /models/base --output-dir runs/r1 --config config.json
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from tuneloop.errors import ConfigError, DatasetError, TrainingError
from tuneloop.models.resolve import offline_env, resolve_model
from tuneloop.train.base import ProgressFn, TrainResult, config_to_dict
from tuneloop.train.trl_config import TRLConfig

_REQUIRED = {
    "sft": [("messages",), ("prompt", "completion"), ("text",)],
    "dpo": [("prompt", "chosen", "rejected"), ("chosen", "rejected")],
    "kto": [("prompt", "completion", "label")],
}


def load_rows(path: str | os.PathLike, method: str):
    """Load a JSONL file as a ``datasets.Dataset`` and check it has the columns ``method`` needs."""
    from datasets import load_dataset

    p = Path(path)
    if not p.exists():
        raise DatasetError(f"training data {p} does not exist")
    try:
        ds = load_dataset("json", data_files=str(p), split="train")
    except Exception as exc:  # noqa: BLE001 - datasets raises many kinds for bad JSON
        raise DatasetError(f"cannot read {p} as JSONL: {exc}") from exc
    if len(ds) == 0:
        raise DatasetError(f"{p} has no rows")
    cols = set(ds.column_names)
    if not any(set(need) <= cols for need in _REQUIRED[method]):
        wanted = " or ".join("{" + ", ".join(n) + "}" for n in _REQUIRED[method])
        raise DatasetError(f"{p}: {method} rows need columns {wanted}; found {sorted(cols)}")
    return ds


def _splits(cfg: TRLConfig, train_path: str | os.PathLike):
    train = load_rows(train_path, cfg.method)
    if cfg.eval_path:
        return train, load_rows(cfg.eval_path, cfg.method)
    if cfg.val_fraction > 0 and len(train) >= 4:
        parts = train.train_test_split(test_size=cfg.val_fraction, seed=cfg.seed)
        return parts["train"], parts["test"]
    return train, None


def _device(cfg: TRLConfig) -> str:
    import torch

    if cfg.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return cfg.device


def _load_model(base_model: str, device: str):
    offline_env()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(base_model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # fp32 weights; bf16 (on a GPU) is autocast by the Trainer, so LoRA math stays stable.
    model = AutoModelForCausalLM.from_pretrained(path, dtype="float32")
    if device != "cpu":
        model.to(device)
    return path, model, tokenizer


def _peft_config(cfg: TRLConfig):
    if not cfg.use_lora:
        return None
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.target_modules, task_type="CAUSAL_LM", bias="none")


def trl_args(cfg: TRLConfig, checkpoint_dir: str, *, device: str, has_eval: bool, quiet: bool):
    """The TRL ``SFTConfig`` / ``DPOConfig`` / ``KTOConfig`` for ``cfg`` (also used by the benchmark)."""
    import torch
    from trl import DPOConfig, KTOConfig, SFTConfig

    on_gpu = device.startswith("cuda")
    bf16 = cfg.bf16 if cfg.bf16 is not None else bool(on_gpu and torch.cuda.is_bf16_supported())
    common: dict[str, Any] = dict(
        output_dir=checkpoint_dir, learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_steps, weight_decay=cfg.weight_decay, num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps, per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
        max_length=cfg.max_length, seed=cfg.seed, bf16=bf16, fp16=False,
        use_cpu=not on_gpu, gradient_checkpointing=cfg.gradient_checkpointing, report_to="none",
        logging_steps=cfg.logging_steps, disable_tqdm=quiet,
        save_strategy="steps" if cfg.save_steps else "no", save_steps=cfg.save_steps or 500,
        save_total_limit=cfg.save_total_limit,
        eval_strategy="steps" if (has_eval and cfg.eval_steps) else "no", eval_steps=cfg.eval_steps or None,
        dataloader_num_workers=0,
    )
    if cfg.method == "sft":
        specific = dict(loss_type=cfg.loss_type, assistant_only_loss=cfg.assistant_only_loss,
                        completion_only_loss=cfg.completion_only_loss, packing=cfg.packing)
        cls = SFTConfig
    elif cfg.method == "dpo":
        specific, cls = dict(beta=cfg.beta, loss_type=list(cfg.loss_type)), DPOConfig
    else:
        specific = dict(beta=cfg.beta, loss_type=cfg.loss_type, desirable_weight=cfg.desirable_weight,
                        undesirable_weight=cfg.undesirable_weight)
        cls = KTOConfig
    try:
        return cls(**{**common, **specific, **cfg.extra})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"TRL rejected the {cfg.method} config: {exc}") from exc


def _progress_callback(progress: ProgressFn | None, total_hint: int):
    from transformers import TrainerCallback

    class _Progress(TrainerCallback):
        """Sends step progress and every log line to ``progress`` (the runner's bar, or the worker's pipe)."""

        def on_step_end(self, args, state, control, **kw):  # noqa: ANN001
            if progress:
                progress({"event": "progress", "step": state.global_step, "total": state.max_steps or total_hint})

        def on_log(self, args, state, control, logs=None, **kw):  # noqa: ANN001
            if progress and logs:
                progress({"event": "log", "step": state.global_step, **{k: v for k, v in logs.items()
                                                                         if isinstance(v, int | float)}})

    return _Progress()


def collect_metrics(trainer, train_output, seconds: float, eval_loss: float | None) -> dict[str, Any]:
    """First/last train loss, eval loss, steps, tokens, tokens/s, seconds (plus DPO/KTO rewards)."""
    history = trainer.state.log_history
    losses = [h["loss"] for h in history if "loss" in h]
    tokens = max((h.get("num_tokens", 0) for h in history), default=0) or trainer.state.num_input_tokens_seen
    runtime = float(train_output.metrics.get("train_runtime") or seconds)
    metrics: dict[str, Any] = {
        "train_loss_first": losses[0] if losses else None,
        "train_loss_last": losses[-1] if losses else None,
        "train_loss_mean": float(train_output.training_loss),
        "eval_loss": eval_loss,
        "steps": int(trainer.state.global_step),
        "tokens": int(tokens),
        "tokens_per_s": (float(tokens) / runtime) if runtime > 0 and tokens else None,
        "train_runtime_s": runtime,
        "seconds": seconds,
        "train_rows": len(trainer.train_dataset) if trainer.train_dataset is not None else None,
    }
    last = history[-1] if history else {}
    for h in reversed(history):
        if "loss" in h:
            last = h
            break
    for key in ("rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected", "kl"):
        if key in last:
            metrics[key.replace("/", "_")] = last[key]
    return metrics


class TRLTrainer:
    """Train a LoRA adapter (or a full model) with TRL's SFT, DPO or KTO trainer."""

    name = "trl"

    def __init__(self, config: TRLConfig | dict | None = None) -> None:
        self.config = config if isinstance(config, TRLConfig) else TRLConfig.from_dict(config)

    @property
    def method(self) -> str:
        return self.config.method

    def subprocess_spec(self) -> dict[str, Any]:
        return {"kind": "trl", "config": self.config.to_dict()}

    def _trainer(self, cfg: TRLConfig, model, tokenizer, args, train, val, progress):
        from trl import DPOTrainer, KTOTrainer, SFTTrainer

        cls = {"sft": SFTTrainer, "dpo": DPOTrainer, "kto": KTOTrainer}[cfg.method]
        total = cfg.max_steps if cfg.max_steps > 0 else 0
        try:
            return cls(model=model, args=args, train_dataset=train, eval_dataset=val, processing_class=tokenizer,
                       peft_config=_peft_config(cfg), callbacks=[_progress_callback(progress, total)])
        except (KeyError, ValueError, TypeError) as exc:
            raise DatasetError(f"TRL could not prepare the {cfg.method} data: {exc}") from exc

    def train(self, dataset_path: str | os.PathLike, output_dir: str | os.PathLike, base_model: str | None,
              config: TRLConfig | dict | None = None, *, progress: ProgressFn | None = None,
              quiet: bool | None = None) -> TrainResult:
        """Train and save under ``output_dir`` (``adapter/`` or ``model/``, ``checkpoints/``, ``metrics.json``)."""
        import torch
        from transformers.trainer_utils import get_last_checkpoint

        cfg = config if isinstance(config, TRLConfig) else (TRLConfig.from_dict(config) if config else self.config)
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        out = Path(output_dir).expanduser().resolve()
        out.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        train, val = _splits(cfg, dataset_path)                          # 1-2) rows and validation split
        device = _device(cfg)
        base_path, model, tokenizer = _load_model(base_model or "smollm2", device)  # 3) base model
        ckpt_dir = out / "checkpoints"
        args = trl_args(cfg, str(ckpt_dir), device=device, has_eval=val is not None,
                        quiet=bool(progress) if quiet is None else quiet)
        trainer = self._trainer(cfg, model, tokenizer, args, train, val, progress)
        last = get_last_checkpoint(str(ckpt_dir)) if (cfg.resume and ckpt_dir.is_dir()) else None
        cpu0 = time.process_time()
        train_output = trainer.train(resume_from_checkpoint=last)         # 4) train
        train_cpu_s = time.process_time() - cpu0
        eval_loss = trainer.evaluate().get("eval_loss") if val is not None else None
        artifact = out / ("adapter" if cfg.use_lora else "model")         # 5) save and report
        trainer.save_model(str(artifact))
        tokenizer.save_pretrained(str(artifact))
        metrics = collect_metrics(trainer, train_output, time.perf_counter() - started, eval_loss)
        metrics.update(method=cfg.method, base_model=str(base_path), resumed_from=last, train_cpu_s=train_cpu_s,
                       device=device)  # the loop prices training at the GPU or CPU rate (loop/cost.py)
        if metrics["train_loss_last"] is not None and metrics["train_loss_last"] != metrics["train_loss_last"]:
            raise TrainingError(f"training diverged: loss is NaN after {metrics['steps']} steps")
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
        (out / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2, default=str))
        return TrainResult(adapter_path=str(artifact) if cfg.use_lora else None,
                           model_path=None if cfg.use_lora else str(artifact),
                           metrics=metrics, output_dir=str(out))


def main(argv: list[str] | None = None) -> int:
    """``python -m tuneloop.train.trl_trainer`` (also under ``accelerate launch``)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--base-model", default="smollm2")
    ap.add_argument("--output-dir", required=True)
    ap.add_argument("--config", help="JSON file of TRLConfig fields")
    ns = ap.parse_args(argv)
    cfg = TRLConfig.from_dict(json.loads(Path(ns.config).read_text()) if ns.config else {})
    result = TRLTrainer(cfg).train(ns.data, ns.output_dir, ns.base_model, cfg, quiet=False)
    print(json.dumps(result.to_dict(), default=str))
    return 0


__all__ = ["TRLTrainer", "TRLConfig", "load_rows", "trl_args", "collect_metrics", "config_to_dict"]

if __name__ == "__main__":
    raise SystemExit(main())
