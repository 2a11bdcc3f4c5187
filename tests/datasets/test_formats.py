"""Every kind/format renders, and reads back into the same sample (rehearsal data)."""
from __future__ import annotations

import pytest

from tuneloop.datasets.formats import FORMATS, Sample, chatml, check_format, parse, render
from tuneloop.errors import DatasetError, ValidationError

PROMPT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
          {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Capital of France?"}]


def _sample(kind):
    if kind == "sft":
        return Sample(prompt=PROMPT, completion="Paris")
    if kind == "dpo":
        return Sample(prompt=PROMPT, completion="Paris", rejected="Lyon")
    if kind == "kto":
        return Sample(prompt=PROMPT, completion="Paris", label=True)
    if kind == "triplets":
        return Sample(prompt=[{"role": "user", "content": "reset password"}], completion="doc a", rejected="doc b")
    return Sample(prompt=[{"role": "user", "content": "reset password"}], completion="doc a", label=0.75)


@pytest.mark.parametrize("kind, fmt", [(k, f) for k, fs in FORMATS.items() for f in fs])
def test_roundtrip(kind, fmt):
    s = _sample(kind)
    back = parse(render(s, kind, fmt), kind)
    assert back.completion == s.completion and back.rejected == s.rejected
    if fmt in ("completion", "standard"):   # one string prompt: multi-turn structure is flattened
        assert "Capital of France?" in back.query and "User: Hi" in back.query
    else:
        assert back.query == s.query
    if kind in ("kto", "reranker"):
        assert back.label == s.label
    if fmt in ("chatml", "messages", "alpaca", "sharegpt") and kind in ("sft", "dpo", "kto"):
        assert [m["content"] for m in back.prompt] == [m["content"] for m in s.prompt]


def test_trl_shapes():
    assert render(_sample("sft"), "sft", "messages")["messages"][-1] == {"role": "assistant", "content": "Paris"}
    dpo = render(_sample("dpo"), "dpo", "messages")
    assert dpo["prompt"] == PROMPT and dpo["chosen"] == [{"role": "assistant", "content": "Paris"}]
    kto = render(_sample("kto"), "kto", "messages")
    assert kto["label"] is True and kto["completion"][0]["content"] == "Paris"
    alpaca = render(_sample("sft"), "sft", "alpaca")
    assert alpaca == {"instruction": "Capital of France?", "input": "", "system": "Be brief.",
                      "history": [["Hi", "Hello"]], "output": "Paris"}
    assert chatml([{"role": "user", "content": "x"}]) == "<|im_start|>user\nx<|im_end|>\n"


def test_bad_kind_or_format_or_row():
    with pytest.raises(ValidationError, match="kind"):
        check_format("rlhf", None)
    with pytest.raises(ValidationError, match="choose one of"):
        check_format("dpo", "chatml")
    assert check_format("sft", None) == "chatml" and check_format("dpo", None) == "messages"
    with pytest.raises(DatasetError, match="dpo row"):
        parse({"prompt": "q"}, "dpo")
