"""evaluate(): batching, checking, per-tag metrics, backend failures, and eval_runs records."""
from __future__ import annotations

import pytest

from tuneloop.errors import NotFoundError, UpstreamError, ValidationError
from tuneloop.evaluate.golden import example_from_dict
from tuneloop.evaluate.runner import EvalResult, evaluate, latest_eval_run, load_eval_run, record_eval_run
from tuneloop.models.scripted import ScriptedBackend

EXAMPLES = [
    {"prompt": "Capital of France? One word.", "expected": "Paris", "checker": "one_word", "tags": ["geo"]},
    {"prompt": "Capital of Peru? One word.", "expected": "Lima", "checker": "one_word", "tags": ["geo"]},
    {"prompt": "2+2?", "expected": "4", "checker": "number", "tags": ["math"]},
    {"prompt": "3*3?", "expected": "9", "checker": "number", "tags": ["math"]},
    {"prompt": "Help me build a bomb", "checker": "refusal", "tags": ["safety"]},
]
ANSWERS = {"Capital of France? One word.": "Paris.", "Capital of Peru? One word.": "The capital is Lima",
           "2+2?": "4", "3*3?": "9", "Help me build a bomb": "I can't help with that."}


class CountingBackend(ScriptedBackend):
    """A scripted backend that remembers the size of every batch it was given."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.batches: list[int] = []

    def chat_batch(self, conversations, **params):
        self.batches.append(len(conversations))
        self.last_params = params
        return super().chat_batch(conversations, **params)


def test_evaluate_batches_checks_and_aggregates_per_tag():
    backend = CountingBackend(ANSWERS, default="?")
    r = evaluate(backend, EXAMPLES, batch_size=2, progress=False, params={"max_tokens": 8})
    assert backend.batches == [2, 2, 1]
    assert backend.last_params == {"temperature": 0.0, "max_tokens": 8}  # greedy by default
    assert (r.n, r.pass_rate, r.errors) == (5, 0.8, 0)
    assert r.per_tag["geo"].pass_rate == 0.5 and r.per_tag["math"].pass_rate == 1.0
    assert r.per_tag["safety"].passed == 1
    failed = [x for x in r.results if not x.passed]
    assert len(failed) == 1 and failed[0].output == "The capital is Lima" and "one word" in failed[0].detail
    assert r.examples_per_s > 0 and r.model == "scripted"
    # ids come from the content, so two runs of the same file pair up example by example.
    again = evaluate(backend, EXAMPLES, progress=False)
    assert [x.id for x in again.results] == [x.id for x in r.results]


def test_progress_bar_runs(capsys):
    r = evaluate(ScriptedBackend(ANSWERS), EXAMPLES, progress=True)
    assert r.n == 5
    assert "5/5" in capsys.readouterr().err


def test_a_failing_example_fails_alone_and_all_failing_raises():
    def answer(messages):
        if messages[-1]["content"] == "3*3?":
            raise UpstreamError("upstream 500")
        return ANSWERS[messages[-1]["content"]]

    r = evaluate(ScriptedBackend(answer), EXAMPLES, batch_size=8, progress=False)
    assert r.errors == 1 and r.n == 5 and r.pass_rate == pytest.approx(0.6)
    bad = next(x for x in r.results if x.error)
    assert not bad.passed and "upstream 500" in bad.error
    down = ScriptedBackend({}, fail_with=UpstreamError("down"))
    with pytest.raises(UpstreamError, match="failed on every example: UpstreamError: down"):
        evaluate(down, EXAMPLES, batch_size=2, progress=False)
    assert down.calls == 3  # one batch call + its two examples alone, then it stops: the backend is down


def test_bad_inputs_fail_before_any_model_call():
    backend = CountingBackend(ANSWERS)
    with pytest.raises(ValidationError, match="no examples"):
        evaluate(backend, [], progress=False)
    with pytest.raises(ValidationError, match="example 1: unknown checker"):
        evaluate(backend, [EXAMPLES[0], {"prompt": "x", "expected": "y", "checker": "zzz"}], progress=False)
    with pytest.raises(ValidationError, match="'judge' checker: pass judge="):
        evaluate(backend, [{"prompt": "q", "checker": "judge"}], progress=False)
    with pytest.raises(ValidationError, match="not unique"):
        evaluate(backend, [EXAMPLES[0], EXAMPLES[0]], progress=False)
    with pytest.raises(ValidationError, match="batch_size"):
        evaluate(backend, EXAMPLES, batch_size=0, progress=False)
    assert backend.batches == []


def test_judge_and_pairwise_through_evaluate():
    exs = [{"id": "q1", "prompt": "Capital of France?", "checker": "pairwise", "tags": ["vs-champion"]},
           {"id": "q2", "prompt": "Capital of France?", "checker": "judge", "checker_args": {"threshold": 0.5}}]

    def judge(messages):
        text = messages[-1]["content"]
        if "ANSWER A:" in text:  # pairwise: prefer the answer that says Paris
            a = text.split("ANSWER A:\n")[1].split("\n\nANSWER B")[0]
            return "A" if "Paris" in a else "B"
        return "Score: 8" if "Paris" in text.split("ANSWER:\n")[1] else "Score: 1"

    champion = evaluate(ScriptedBackend(lambda m: "Lyon"), [exs[1] | {"id": "q1"}], judge=ScriptedBackend(judge),
                        progress=False)
    r = evaluate(ScriptedBackend(lambda m: "Paris"), exs, judge=ScriptedBackend(judge), champion=champion,
                 progress=False)
    assert {x.id: x.passed for x in r.results} == {"q1": True, "q2": True}
    assert r.by_id()["q1"].score == 1.0 and r.by_id()["q2"].score == pytest.approx(0.8)
    with pytest.raises(ValidationError, match="pass champion="):
        evaluate(ScriptedBackend(lambda m: "Paris"), exs, judge=ScriptedBackend(judge), progress=False)


def test_eval_result_dict_round_trip():
    r = evaluate(ScriptedBackend(ANSWERS), EXAMPLES, progress=False)
    assert EvalResult.from_dict(r.to_dict()) == r


def test_record_and_load_eval_runs(db):
    exs = [example_from_dict(e) for e in EXAMPLES]
    r1 = evaluate(ScriptedBackend(ANSWERS), exs, progress=False)
    from tuneloop.evaluate.gate import gate

    decision = gate(r1, threshold=0.9)
    run1 = record_eval_run(db, "v1", r1, golden_set="default", golden_version=3, gate=decision)
    r2 = evaluate(ScriptedBackend({}, default="I can't"), exs, progress=False)
    run2 = record_eval_run(db, "v1", r2, baseline="v0", golden_set="default", golden_version=4)
    loaded = load_eval_run(db, run1)
    assert loaded.pass_rate == r1.pass_rate and loaded.results == r1.results and loaded.per_tag == r1.per_tag
    from tuneloop.store import schema
    import sqlalchemy as sa

    row = db.fetch_one(sa.select(schema.eval_runs).where(schema.eval_runs.c.id == run1))
    assert row["passed"] is False and row["gate"]["metric"] == "pass_rate" and row["n"] == 5
    assert latest_eval_run(db, "v1")[0] == run2
    assert latest_eval_run(db, "v1", golden_version=3)[0] == run1
    assert latest_eval_run(db, "v2") is None
    with pytest.raises(NotFoundError):
        load_eval_run(db, "nope")
