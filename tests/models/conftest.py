"""Fixtures for the model backends: the tiny model and a real (randomly initialised) LoRA adapter."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)  # faster and steadier under CPU contention


@pytest.fixture(scope="session")
def tiny_path(tmp_path_factory):
    from tuneloop.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny")


def make_adapter(base_path, out_dir, seed: int = 1, r: int = 8):
    """A real PEFT LoRA adapter with random (non-zero) B, so it visibly changes the base's answers."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_path)
    torch.manual_seed(seed)
    cfg = LoraConfig(r=r, lora_alpha=4 * r, target_modules=["q_proj", "v_proj", "o_proj", "down_proj"],
                     init_lora_weights=False, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, cfg)
    peft_model.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="session")
def tiny_adapter(tiny_path, tmp_path_factory):
    return make_adapter(tiny_path, tmp_path_factory.mktemp("adapter") / "a1", seed=1)


@pytest.fixture(scope="session")
def tiny_adapter2(tiny_path, tmp_path_factory):
    return make_adapter(tiny_path, tmp_path_factory.mktemp("adapter") / "a2", seed=2)


@pytest.fixture(scope="session")
def pool():
    from tuneloop.models.local import LocalModelPool

    p = LocalModelPool()
    yield p
    p.close()
