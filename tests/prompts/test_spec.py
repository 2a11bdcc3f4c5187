"""PromptSpec validation and application; candidate lists from YAML; failure cases from the store."""
from __future__ import annotations

import pytest

from tuneloop.errors import ConfigError, ValidationError
from tuneloop.ids import new_id, now
from tuneloop.prompts import PromptSpec, collect_failures, load_candidates, summarize, untried
from tuneloop.prompts.spec import apply_to_example
from tuneloop.store import schema


def test_apply_puts_system_few_shot_and_template_around_the_conversation():
    spec = PromptSpec(system="Answer in one word.", template="Question: {input}",
                      few_shot=({"user": "Capital of Chile?", "assistant": "Santiago"},
                                {"role": "user", "content": "And Peru?"}, {"role": "assistant", "content": "Lima"}))
    convo = [{"role": "system", "content": "Caller rules."}, {"role": "user", "content": "Hi"},
             {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Capital of Spain?"}]
    assert spec.apply(convo) == [
        {"role": "system", "content": "Answer in one word.\n\nCaller rules."},
        {"role": "user", "content": "Capital of Chile?"}, {"role": "assistant", "content": "Santiago"},
        {"role": "user", "content": "And Peru?"}, {"role": "assistant", "content": "Lima"},
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Question: Capital of Spain?"},  # only the last user turn is templated
    ]
    assert convo[-1]["content"] == "Capital of Spain?"
    assert PromptSpec(template='JSON {"q": "{query}"}').apply([{"role": "user", "content": "x"}])[0]["content"] == \
        'JSON {"q": "x"}'
    assert PromptSpec().apply(convo[1:2]) == convo[1:2]


@pytest.mark.parametrize("bad, message", [
    ({"template": "no placeholder"}, "must contain {input}"),
    ({"system": 3}, "prompt system must be text"),
    ({"few_shot": [{"user": "q"}]}, r"few_shot\[0\] must be"),
    ({"few_shot": [{"role": "robot", "content": "x"}]}, r"few_shot\[0\] needs a role"),
    ({"few_shot": "q: a"}, "list of example turns"),
    ({"sampling": {"temperature": 3}}, r"temperature must be a number within \[0.0, 2.0\]"),
    ({"sampling": {"max_tokens": 0}}, "max_tokens must be a positive whole number"),
    ({"sampling": {"stop": [1]}}, "stop must be a text or a list"),
    ({"sampling": {"temprature": 0.2}}, r"unknown sampling parameter\(s\) \['temprature'\]"),
    ({"sytem": "typo"}, r"unknown prompt field\(s\) \['sytem'\]"),
])
def test_bad_prompts_are_refused_with_the_field_named(bad, message):
    with pytest.raises(ValidationError, match=message):
        PromptSpec.from_value(bad)


def test_round_trip_fingerprint_and_label():
    spec = PromptSpec.from_value({"system": "S", "few_shot": [{"user": "a", "assistant": "b"}],
                                  "sampling": {"temperature": 0.2}, "name": "short"})
    assert PromptSpec.from_value(spec.to_dict()) == spec
    assert spec.to_dict() == {"system": "S", "few_shot": [{"user": "a", "assistant": "b"}],
                              "sampling": {"temperature": 0.2}, "name": "short"}
    # name and notes do not change answers: same fingerprint; sampling does
    assert spec.replace(name="other", notes="why").fingerprint() == spec.fingerprint()
    assert spec.replace(sampling={"temperature": 0.3}).fingerprint() != spec.fingerprint()
    assert spec.label() == "short" and PromptSpec(system="x" * 100).label(10) == "x" * 9 + "…"
    assert PromptSpec.from_value("  ") is None and PromptSpec.from_value("Be brief.") == PromptSpec(system="Be brief.")


def test_training_rows_are_rendered_as_served():
    spec = PromptSpec(system="Number only.", template="Q: {input}")
    row = {"messages": [{"role": "user", "content": "1+1="}, {"role": "assistant", "content": "2"}]}
    assert apply_to_example(row, spec)["messages"] == [
        {"role": "system", "content": "Number only."}, {"role": "user", "content": "Q: 1+1="},
        {"role": "assistant", "content": "2"}]
    dpo = {"prompt": [{"role": "user", "content": "1+1="}], "chosen": "2", "rejected": "3"}
    assert apply_to_example(dpo, spec)["prompt"][0]["content"] == "Number only."
    assert apply_to_example({"text": "raw"}, spec) == {"text": "raw"}
    assert apply_to_example(row, None) == row


def test_candidates_from_yaml_with_positions_in_errors(tmp_path):
    path = tmp_path / "prompts.yaml"
    path.write_text("# candidates\n- Be brief.\n- name: terse\n  system: One word.\n  sampling: {temperature: 0}\n")
    cands = load_candidates(path)
    assert [c.label() for c in cands] == ["Be brief.", "terse"] and cands[1].sampling == {"temperature": 0}
    assert [c.label() for c in load_candidates({"candidates": ["A"]})] == ["A"]
    assert untried(cands + [PromptSpec(system="Be brief.", name="dupe")], [cands[1].fingerprint()]) == [cands[0]]
    path.write_text("- ok\n- {template: 'no slot'}\n")
    with pytest.raises(ConfigError, match=r"prompts.yaml: candidate 2: prompt template must contain \{input\}"):
        load_candidates(path)
    path.write_text("- ok\n- ''\n")
    with pytest.raises(ConfigError, match="candidate 2 is empty"):
        load_candidates(path)
    path.write_text("just: [text")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_candidates(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_candidates(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="expected a list of prompts"):
        load_candidates({"prompts": []})


def test_failure_cases_come_from_negative_rewards_categories_and_low_scores(db):
    rows = [
        {"reward": -2.0, "failure_category": None, "quality_score": None, "version_id": "v0"},   # regenerated
        {"reward": None, "failure_category": "refusal", "quality_score": None, "version_id": "v0"},  # judge
        {"reward": None, "failure_category": None, "quality_score": 0.2, "version_id": "v0"},   # low score
        {"reward": 1.0, "failure_category": None, "quality_score": 0.9, "version_id": "v0"},    # fine
        {"reward": -1.0, "failure_category": None, "quality_score": None, "version_id": "v9"},  # another version
    ]
    ids = []
    with db.begin() as conn:
        for i, r in enumerate(rows):
            ids.append(new_id())
            conn.execute(schema.interactions.insert().values(id=ids[-1], ts=now() - 100 + i, model="m", query=f"q{i}",
                                                             response=f"a{i}", **r))
        conn.execute(schema.feedback.insert().values(id=new_id(), interaction_id=ids[0], kind="comment",
                                                     text="wrong format", ts=now()))
    cases = collect_failures(db, version_id="v0")
    assert [c.query for c in cases] == ["q2", "q1", "q0"]  # newest first
    assert cases[-1].comments == ("wrong format",) and cases[1].category == "refusal"
    assert summarize(cases) == {"cases": 3, "categories": {"unrated": 2, "refusal": 1}, "negative_reward": 1,
                                "with_comments": 1}
    assert len(collect_failures(db)) == 4 and len(collect_failures(db, version_id="v0", limit=1)) == 1
