"""Real TRL on the tiny model: SFT through the subprocess runner, DPO and KTO in-process."""
from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from tuneloop.errors import DatasetError
from tuneloop.store import schema
from tuneloop.train.runner import TrainingRunner
from tuneloop.train.trl_trainer import TRLConfig, TRLTrainer


def _lora_tensors(adapter_dir):
    from safetensors.torch import load_file

    return load_file(str(adapter_dir / "adapter_model.safetensors"))


def test_sft_through_the_subprocess_runner_changes_weights_and_lowers_loss(db, tiny_path, data_dir, tmp_path):
    cfg = TRLConfig(max_steps=12, learning_rate=2e-3, batch_size=4, lora_r=8, target_modules=["q_proj", "v_proj"],
                    val_fraction=0.2)
    runner = TrainingRunner(db, num_threads=1, show_progress=False)
    result = runner.run(TRLTrainer(cfg), data_dir / "sft.jsonl", tmp_path / "run", str(tiny_path), dataset_id="ds-1")
    # LoRA B starts at zero: non-zero B means the adapter really trained.
    tensors = _lora_tensors(tmp_path / "run" / "adapter")
    b = [t for k, t in tensors.items() if "lora_B" in k]
    assert len(b) == 4 and all(t.abs().sum() > 0 for t in b)
    m = result.metrics
    assert m["train_loss_last"] < m["train_loss_first"] - 0.1
    assert m["steps"] == 12 and m["tokens"] > 0 and m["tokens_per_s"] > 0 and m["eval_loss"] is not None
    row = db.fetch_one(sa.select(schema.train_runs).where(schema.train_runs.c.id == result.run_id))
    assert row["status"] == "succeeded" and row["backend"] == "trl" and row["method"] == "sft"
    assert row["dataset_id"] == "ds-1" and row["config"]["lora_r"] == 8
    assert row["metrics"]["train_loss_last"] == pytest.approx(m["train_loss_last"])
    assert row["started_at"] <= row["ended_at"] and row["log_path"].endswith("train.log")
    assert "loss" in (tmp_path / "run" / "train.log").read_text()
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["steps"] == 12


def test_dpo_with_sft_term_completes_and_records_loss(tiny_path, data_dir, tmp_path):
    cfg = TRLConfig(method="dpo", max_steps=6, learning_rate=2e-3, batch_size=2, lora_r=8)
    result = TRLTrainer(cfg).train(data_dir / "dpo.jsonl", tmp_path / "dpo", str(tiny_path), quiet=True)
    m = result.metrics
    assert m["steps"] == 6 and m["train_loss_first"] is not None and m["train_loss_last"] is not None
    assert m["rewards_margins"] > 0  # chosen answers gained on rejected ones
    assert (tmp_path / "dpo" / "adapter" / "adapter_config.json").exists()


def test_kto_completes(tiny_path, data_dir, tmp_path):
    cfg = TRLConfig(method="kto", max_steps=4, learning_rate=2e-3, batch_size=4, lora_r=4)
    result = TRLTrainer(cfg).train(data_dir / "kto.jsonl", tmp_path / "kto", str(tiny_path), quiet=True)
    assert result.metrics["steps"] == 4 and result.adapter_path


def test_checkpoints_and_resume(tiny_path, data_dir, tmp_path):
    out = tmp_path / "resumable"
    first = TRLConfig(max_steps=4, save_steps=2, learning_rate=1e-3, lora_r=4)
    TRLTrainer(first).train(data_dir / "sft.jsonl", out, str(tiny_path), quiet=True)
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    longer = TRLConfig(max_steps=6, save_steps=2, learning_rate=1e-3, lora_r=4)
    result = TRLTrainer(longer).train(data_dir / "sft.jsonl", out, str(tiny_path), quiet=True)
    assert result.metrics["resumed_from"].endswith("checkpoint-4")
    assert result.metrics["steps"] == 6


def test_bad_rows_name_the_missing_columns(tiny_path, data_dir, tmp_path):
    with pytest.raises(DatasetError, match=r"sft rows need columns \{messages\}"):
        TRLTrainer().train(data_dir / "bad_sft.jsonl", tmp_path / "bad", str(tiny_path))
    with pytest.raises(DatasetError, match="does not exist"):
        TRLTrainer().train(tmp_path / "missing.jsonl", tmp_path / "bad", str(tiny_path))
