"""The built SFT / DPO / KTO files load unchanged into TRL's trainers and train a tiny model."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow

torch = pytest.importorskip("torch")
trl = pytest.importorskip("trl")

from tuneloop.datasets.generator import DataGeneratorConfig, TrainingDataGenerator  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoTokenizer

    from tuneloop.models.tiny import build_tiny_model

    torch.set_num_threads(1)
    path = build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")
    return path, AutoTokenizer.from_pretrained(path)


def _model(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path)


_COMMON = dict(use_cpu=True, bf16=False, report_to="none", save_strategy="no", max_steps=2,
               per_device_train_batch_size=2, activation_checkpointing=False, logging_steps=1, learning_rate=1e-3)


def _load(path):
    from datasets import load_dataset

    return load_dataset("json", data_files=str(path), split="train")


def _seed(add, interaction, n=8):
    rows = []
    for i in range(n):
        rows.append(interaction(f"g{i}", f"What is {i} + {i}?", f"{2 * i}", reward=2.0, user_id="u", session_id=f"s{i}"))
        rows.append(interaction(f"b{i}", f"What is {i} + {i}?", f"{2 * i + 1}", reward=-2.0, user_id="u",
                                session_id=f"t{i}"))
    add("interactions", rows)


def _changed(model, before):
    return any(not torch.equal(p.detach(), before[n]) for n, p in model.named_parameters())


@pytest.mark.parametrize("fmt", ["messages", "chatml", "completion"])
def test_sft_file_trains(db, add, interaction, tmp_path, tiny, fmt):
    from trl import SFTConfig, SFTTrainer

    _seed(add, interaction)
    res = TrainingDataGenerator(db, DataGeneratorConfig(format_type=fmt, min_quality_score=None)).generate(
        tmp_path / "sft.jsonl")
    assert res.final_count == 16
    model = _model(tiny[0])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = SFTTrainer(model=model, args=SFTConfig(output_dir=str(tmp_path / "o"), max_length=64, **_COMMON),
                         train_dataset=_load(res.path), processing_class=tiny[1])
    out = trainer.train()
    assert out.global_step == 2 and _changed(model, before)


def test_dpo_file_trains(db, add, interaction, tmp_path, tiny):
    from trl import DPOConfig, DPOTrainer

    _seed(add, interaction)
    res = TrainingDataGenerator(db, DataGeneratorConfig(kind="dpo", dpo_sources=("rewards",))).generate(
        tmp_path / "dpo.jsonl")
    assert res.final_count == 8
    model = _model(tiny[0])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = DPOTrainer(model=model, args=DPOConfig(output_dir=str(tmp_path / "o"), max_length=64, **_COMMON),
                         train_dataset=_load(res.path), processing_class=tiny[1])
    assert trainer.train().global_step == 2 and _changed(model, before)


def test_kto_file_trains(db, add, interaction, tmp_path, tiny):
    from trl import KTOConfig, KTOTrainer

    _seed(add, interaction)
    res = TrainingDataGenerator(db, DataGeneratorConfig(kind="kto")).generate(tmp_path / "kto.jsonl")
    assert res.counts["desirable"] == 8 and res.counts["undesirable"] == 8
    model = _model(tiny[0])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = KTOTrainer(model=model, args=KTOConfig(output_dir=str(tmp_path / "o"), max_length=64, **_COMMON),
                         train_dataset=_load(res.path), processing_class=tiny[1])
    assert trainer.train().global_step == 2 and _changed(model, before)
