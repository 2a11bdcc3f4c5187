"""The ``prompt`` trainer behind the trainer protocol, run by the real TrainingRunner (train_runs rows)."""
from __future__ import annotations

import doctest
import importlib
import json

import pytest
import sqlalchemy as sa

from tuneloop.errors import ConfigError, TrainingError
from tuneloop.models.scripted import ScriptedBackend
from tuneloop.prompts import FailureCase, PromptSpec
from tuneloop.store import schema
from tuneloop.train.base import Trainer
from tuneloop.train.prompt import PromptTrainer, PromptTrainerConfig, read_failures, write_failures
from tuneloop.train.runner import TrainingRunner

FAILURES = [FailureCase("i1", "2+2=", "The answer is 4.", -2.0, "format_violation", None, ("just the number",)),
            FailureCase("i2", "3+5=", "It is 8.", None, None, 0.1)]


def _failures(tmp_path):
    path = tmp_path / "failures.jsonl"
    assert write_failures(FAILURES, path) == 2
    assert read_failures(path) == FAILURES
    return path


def test_next_takes_the_first_untried_candidate_and_is_recorded(db, tmp_path):
    cfg = PromptTrainerConfig(candidates=["Be friendly.", {"name": "number-only", "system": "Number only."}],
                              strategy="next")
    trainer = PromptTrainer(cfg, base=PromptSpec(system="Old."), tried=[PromptSpec(system="Be friendly.").fingerprint()])
    assert isinstance(trainer, Trainer) and trainer.subprocess_spec() is None
    result = TrainingRunner(db, show_progress=False).run(trainer, _failures(tmp_path), tmp_path / "run",
                                                         "tiny", run_id="r1")
    assert json.loads(open(result.prompt_path).read()) == {"system": "Number only.", "name": "number-only"}
    assert result.artifact == result.prompt_path and result.adapter_path is None
    row = db.fetch_one(sa.select(schema.train_runs).where(schema.train_runs.c.id == "r1"))
    assert (row["backend"], row["method"], row["status"]) == ("prompt", "prompt", "succeeded")
    assert row["config"]["strategy"] == "next" and row["metrics"]["source"] == "list"
    assert row["metrics"]["chosen"] == "number-only" and row["metrics"]["considered"] == 1
    assert row["metrics"]["failures"] == {"cases": 2, "categories": {"format_violation": 1, "unrated": 1},
                                          "negative_reward": 1, "with_comments": 1}


def test_best_scores_every_candidate_against_the_champions_prompt(tmp_path):
    scores = {None: 0.2, "Be friendly.": 0.1, "Number only.": 0.7, "Terse.": 0.7}
    seen = []

    def score(spec):
        seen.append(spec.system if spec else None)
        return scores[spec.system if spec else None]

    cfg = PromptTrainerConfig(candidates=["Be friendly.", "Number only.", "Terse."], strategy="best")
    steps = []
    result = PromptTrainer(cfg, score_fn=score).train(None, tmp_path, None, progress=steps.append)
    m = result.metrics
    assert seen == [None, "Be friendly.", "Number only.", "Terse."]
    assert m["chosen"] == "Number only." and m["chosen_score"] == 0.7 and m["champion_score"] == 0.2  # ties: list order
    assert m["improves"] is True and [s["score"] for s in m["scores"]] == [0.7, 0.7, 0.1]
    assert steps[-1] == {"event": "progress", "step": 4, "total": 4}
    flat = PromptTrainer(PromptTrainerConfig(candidates=["Be friendly."]), score_fn=score).train(None, tmp_path / "b", None)
    assert flat.metrics["improves"] is False


def test_rewriter_sees_the_failure_cases_and_keeps_the_rest_of_the_prompt(db, tmp_path):
    asked = []

    def rewriter(messages):
        asked.append(messages)
        return "Here you go:\n<prompt>Answer with the number only.</prompt>"

    base = PromptSpec(system="Be helpful.", template="Q: {input}", sampling={"temperature": 0.1}, name="v0")
    cfg = PromptTrainerConfig(rewriter={"backend": "scripted"}, strategy="next", instructions="Keep it short.")
    trainer = PromptTrainer(cfg, base=base, rewriter=ScriptedBackend(rewriter))
    result = TrainingRunner(db, show_progress=False).run(trainer, _failures(tmp_path), tmp_path / "run", None)
    spec = PromptSpec.from_value(json.loads(open(result.prompt_path).read()))
    assert spec.system == "Answer with the number only." and spec.template == "Q: {input}"
    assert spec.sampling == {"temperature": 0.1} and spec.name is None and "2 failure cases" in spec.notes
    text = asked[0][1]["content"]
    for expected in ("CURRENT SYSTEM PROMPT:\nBe helpful.", "format_violation (1)", "USER: 2+2=",
                     "ASSISTANT: The answer is 4.", "USER COMMENT: just the number", "reward -2.0",
                     "OWNER'S GUIDANCE: Keep it short."):
        assert expected in text
    assert result.metrics["source"] == "rewrite"


def test_useless_rewrites_and_exhausted_lists_fail_the_run(db, tmp_path):
    cfg = PromptTrainerConfig(rewriter={"backend": "scripted"}, strategy="next")
    runner = TrainingRunner(db, show_progress=False)
    for reply, message in (("I would not change a thing.", "holds no <prompt>"),
                           ("<prompt>Be helpful.</prompt>", "unchanged")):
        trainer = PromptTrainer(cfg, base=PromptSpec(system="Be helpful."), rewriter=ScriptedBackend(lambda m: reply))
        with pytest.raises(TrainingError, match=message):
            runner.run(trainer, _failures(tmp_path), tmp_path / "bad", None, run_id=f"bad-{message[:5]}")
    done = PromptTrainer(PromptTrainerConfig(candidates=["A."]), tried=[PromptSpec(system="A.").fingerprint()])
    with pytest.raises(TrainingError, match="no untried prompt candidate is left"):
        runner.run(done, _failures(tmp_path), tmp_path / "none", None, run_id="none")
    statuses = {r["id"]: r["status"] for r in db.fetch_all(sa.select(schema.train_runs))}
    assert set(statuses.values()) == {"failed"} and len(statuses) == 3  # a failed run never returns a prompt


def test_config_is_validated():
    with pytest.raises(ConfigError, match="needs candidates"):
        PromptTrainerConfig()
    with pytest.raises(ConfigError, match="strategy 'random'"):
        PromptTrainerConfig(candidates=["a"], strategy="random")
    with pytest.raises(ConfigError, match="must name a registered version"):
        PromptTrainerConfig(rewriter={"model": "gpt"})
    with pytest.raises(ConfigError, match="unknown prompt_config keys: canidates"):
        PromptTrainerConfig.from_dict({"canidates": ["a"]})
    with pytest.raises(ConfigError, match="no rewriter backend was given"):
        PromptTrainer(PromptTrainerConfig(rewriter={"version": "champion"}))


@pytest.mark.parametrize("module", ["tuneloop.train.prompt", "tuneloop.prompts.spec", "tuneloop.prompts.candidates",
                                    "tuneloop.prompts.rewrite", "tuneloop.loop.levers"])
def test_docstring_examples_run(module):
    result = doctest.testmod(importlib.import_module(module))
    assert result.failed == 0 and result.attempted > 0
