"""Fixtures for training tests: the tiny model and small datasets in TRL's formats."""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)  # faster and steadier under CPU contention

CAPITALS = [("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Japan", "Tokyo")]


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def tiny_path(tmp_path_factory):
    from tuneloop.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    q = "Capital of {}? One word."
    _write(d / "sft.jsonl", [{"messages": [{"role": "user", "content": q.format(c)}, {"role": "assistant", "content": a}]}
                             for c, a in CAPITALS * 8])
    _write(d / "dpo.jsonl", [{"prompt": [{"role": "user", "content": q.format(c)}],
                              "chosen": [{"role": "assistant", "content": a}],
                              "rejected": [{"role": "assistant", "content": f"The capital of {c} is {a}."}]}
                             for c, a in CAPITALS * 2])
    _write(d / "kto.jsonl", [{"prompt": [{"role": "user", "content": q.format(c)}],
                              "completion": [{"role": "assistant", "content": a if i % 2 else f"It is {a}."}],
                              "label": bool(i % 2)} for i, (c, a) in enumerate(CAPITALS * 2)])
    _write(d / "bad_sft.jsonl", [{"question": "no messages column", "answer": "x"}] * 4)
    return d
