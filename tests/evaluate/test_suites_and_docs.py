"""Built-in benchmark suites, a real local model through evaluate(), and the docstring examples."""
from __future__ import annotations

import doctest
import importlib
import re

import pytest

from tuneloop.errors import ValidationError
from tuneloop.evaluate import evaluate, gate
from tuneloop.evaluate.suites import SUITES, get_suite, list_suites, register_suite
from tuneloop.models.scripted import ScriptedBackend

MODULES = ["checkers", "gate", "golden", "judge", "jsonschema_lite", "retrieval_metrics", "runner", "suites",
           "text_metrics", "__init__"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module("tuneloop.evaluate" + ("" if name == "__init__" else f".{name}"))
    result = doctest.testmod(module)
    assert result.failed == 0 and result.attempted > 0


def _oracle(messages):
    """A perfect model for the built-in suites: computes sums, knows the capitals, refuses canaries."""
    prompt = messages[-1]["content"]
    if m := re.match(r"What is (\d+) ([-+*]) (\d+)\?", prompt):
        a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
        return str(a + b if op == "+" else a - b if op == "-" else a * b)
    if m := re.match(r"What is the capital of (\w+)\?", prompt):
        from tuneloop.evaluate.suites import _CAPITALS

        return dict(_CAPITALS)[m.group(1)] + "."
    return "I'm sorry, I can't help with that."


def test_builtin_suites_are_passable_and_failable():
    assert [s.name for s in list_suites()] == ["arithmetic", "capitals", "safety"]
    for suite in list_suites():
        examples = suite.load()
        assert len(examples) >= 5
        assert evaluate(ScriptedBackend(_oracle), examples, progress=False).pass_rate == 1.0, suite.name
        assert evaluate(ScriptedBackend(lambda m: "Sure, here you go: 12 and Paris"), examples,
                        progress=False).pass_rate == 0.0, suite.name
    assert get_suite("arithmetic").load()[0].prompt == get_suite("arithmetic").load()[0].prompt  # deterministic


def test_register_a_jsonl_suite_with_a_checker_override(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"prompt": "Say hi", "expected": "hi"}\n')
    try:
        suite = register_suite("greet", path, checker="contains")
        assert suite.load()[0].checker == "contains"
        assert evaluate(ScriptedBackend(lambda m: "oh hi there"), suite.load(), progress=False).pass_rate == 1.0
    finally:
        SUITES.pop("greet", None)
    with pytest.raises(ValidationError, match="unknown benchmark suite 'nope'"):
        get_suite("nope")
    with pytest.raises(ValidationError, match="bad suite name"):
        register_suite("a b", path)
    with pytest.raises(ValidationError, match="unknown checker"):
        register_suite("x", path, checker="zzz")


def test_evaluate_a_real_local_model(tmp_path_factory):
    pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from tuneloop.models.local import LocalBackend

    backend = LocalBackend("tiny", max_new_tokens=6, data_dir=tmp_path_factory.mktemp("models"))
    examples = get_suite("arithmetic").load()[:6]
    r = evaluate(backend, examples, batch_size=4, progress=False)
    assert r.n == 6 and r.errors == 0 and r.examples_per_s > 0
    assert all(isinstance(x.output, str) for x in r.results)
    # An untrained model cannot do arithmetic: the gate must say so.
    d = gate(r, threshold=0.85)
    assert not d.passed and d.metric == "pass_rate"
    again = evaluate(backend, examples, batch_size=4, progress=False)  # greedy by default: repeatable
    assert [x.output for x in again.results] == [x.output for x in r.results]
