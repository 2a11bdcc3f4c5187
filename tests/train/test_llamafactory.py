"""The LLaMA-Factory YAML and data writer (seed 003's llamafactory-cli flow)."""
from __future__ import annotations

import json

import yaml

from tuneloop.train.llamafactory import convert_row, write_llamafactory_config
from tuneloop.train.trl_config import TRLConfig


def test_dpo_config_and_data(data_dir, tmp_path):
    cfg = TRLConfig(method="dpo", lora_r=8, learning_rate=5e-7, beta=0.2, max_steps=100)
    path = write_llamafactory_config(data_dir / "dpo.jsonl", tmp_path, "/models/base", cfg)
    y = yaml.safe_load(path.read_text())
    assert y["stage"] == "dpo" and y["finetuning_type"] == "lora" and y["lora_rank"] == 8
    assert y["pref_beta"] == 0.2 and y["pref_loss"] == "sigmoid" and y["pref_ftx"] == 1.0
    assert y["learning_rate"] == 5e-7 and y["max_steps"] == 100 and y["model_name_or_path"] == "/models/base"
    assert y["dataset"] == "tuneloop_train" and y["output_dir"] == str(tmp_path)
    info = json.loads((tmp_path / "lf_data" / "dataset_info.json").read_text())["tuneloop_train"]
    assert info["ranking"] is True and info["formatting"] == "sharegpt"
    assert info["columns"] == {"messages": "messages", "chosen": "chosen", "rejected": "rejected"}
    rows = [json.loads(x) for x in (tmp_path / "lf_data" / "tuneloop_train.jsonl").read_text().splitlines()]
    assert len(rows) == 10 and rows[0]["chosen"] == {"role": "assistant", "content": "Paris"}


def test_sft_and_kto_rows():
    assert convert_row({"prompt": "Q?", "completion": "A"}, "sft") == {
        "messages": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A"}]}
    kto = convert_row({"prompt": [{"role": "user", "content": "Q?"}], "completion": "A", "label": False}, "kto")
    assert kto["label"] is False and kto["messages"][-1] == {"role": "assistant", "content": "A"}
