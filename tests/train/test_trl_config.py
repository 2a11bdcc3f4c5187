"""TRLConfig validates in one place, with messages that say what to change."""
from __future__ import annotations

import pytest

from tuneloop.errors import ConfigError
from tuneloop.train.trl_config import TRLConfig


def test_defaults_per_method():
    assert TRLConfig().loss_type == "nll"
    assert TRLConfig(method="dpo").loss_type == ["sigmoid", "sft"]
    assert TRLConfig(method="dpo", loss_type="sigmoid").loss_type == ["sigmoid"]
    assert TRLConfig(method="kto").loss_type == "kto"


@pytest.mark.parametrize("kw, match", [
    ({"method": "ppo"}, "method must be one of"),
    ({"lora_r": 0}, "lora_r must be a positive"),
    ({"learning_rate": -1}, "learning_rate must be a positive"),
    ({"lora_dropout": 1.0}, "lora_dropout must be in"),
    ({"val_fraction": 1.5}, "val_fraction must be in"),
    ({"max_steps": 0}, "max_steps must be -1"),
    ({"epochs": 0}, "epochs must be > 0"),
    ({"beta": 0}, "beta must be > 0"),
    ({"device": "tpu"}, "device must be auto, cpu or cuda"),
    ({"target_modules": 3}, "target_modules must be"),
])
def test_bad_values_are_rejected(kw, match):
    with pytest.raises(ConfigError, match=match):
        TRLConfig(**kw)


def test_from_dict_round_trip_and_unknown_keys():
    cfg = TRLConfig(method="dpo", lora_r=4, target_modules=["q_proj", "v_proj"])
    assert TRLConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match=r"unknown TRL config key\(s\) \['lr'\]"):
        TRLConfig.from_dict({"lr": 1e-3})
    assert "LoRA rank" in TRLConfig.help()["lora_r"]
