"""Every checker in the registry, on answers that must pass and answers that must fail."""
from __future__ import annotations

import pytest

from tuneloop.errors import ValidationError
from tuneloop.evaluate import checkers as ck
from tuneloop.evaluate.checkers import CheckContext, check, get_checker, normalize
from tuneloop.evaluate.jsonschema_lite import HAVE_JSONSCHEMA, schema_errors, validate_schema_definition
from tuneloop.models.scripted import ScriptedBackend


def test_registry_has_every_checker_and_rejects_unknown_names():
    assert {"exact", "contains", "regex", "json_schema", "rouge_l", "bleu", "one_word", "number", "refusal",
            "judge", "pairwise"} <= set(ck.CHECKERS)
    with pytest.raises(ValidationError, match=r"unknown checker 'fuzzy'.*known checkers: .*exact"):
        get_checker("fuzzy")


def test_register_a_custom_checker():
    custom = ck.Checker("even_length", lambda o, e, a, c: ck.CheckResult(len(o) % 2 == 0, 1.0))
    try:
        ck.register_checker(custom)
        assert check("even_length", "ab").passed and not check("even_length", "abc").passed
    finally:
        ck.CHECKERS.pop("even_length")


@pytest.mark.parametrize("text,want", [("  Paris. ", "paris"), ('"Paris".', "paris"), ("New   York!", "new york"),
                                       ("Paris?!", "paris")])
def test_normalize(text, want):
    assert normalize(text) == want


def test_exact_is_normalized_and_case_option_works():
    assert check("exact", " paris.", "Paris").passed
    assert not check("exact", "paris", "Paris", {"ignore_case": False}).passed
    assert not check("exact", "Paris.", "Paris", {"strip_punctuation": False}).passed
    assert not check("exact", "The capital is Paris", "Paris").passed
    assert check("exact", "NYC", "New York", {"any_of": ["NYC"]}).passed
    assert check("exact", "Paris", "Lyon").detail.startswith("expected 'Lyon'")


def test_checker_args_are_validated():
    with pytest.raises(ValidationError, match="no argument 'ignorecase'"):
        check("exact", "a", "a", {"ignorecase": True})
    with pytest.raises(ValidationError, match="bad type"):
        check("rouge_l", "a", "a", {"threshold": "high"})
    with pytest.raises(ValidationError, match="needs an 'expected'"):
        check("exact", "a", None)


def test_contains():
    assert check("contains", "The capital of France is PARIS, of course.", "paris").passed
    assert not check("contains", "The capital is Lyon", "Paris").passed
    assert not check("contains", "PARIS", "paris", {"ignore_case": False}).passed


def test_contains_with_max_words_wants_it_briefly():
    assert check("contains", "The capital of France is Paris.", "Paris", {"max_words": 8}).passed
    long = check("contains", "Paris is the capital and largest city of France, on the Seine.", "Paris", {"max_words": 8})
    assert not long.passed and "max_words 8" in long.detail
    assert not check("contains", "Lyon.", "Paris", {"max_words": 8}).passed


def test_regex():
    assert check("regex", "Order #12345 confirmed", None, {"pattern": r"#\d{5}\b"}).passed
    assert not check("regex", "Order 12345", None, {"pattern": r"#\d{5}"}).passed
    assert check("regex", "abc", r"[a-c]+", {"fullmatch": True}).passed
    assert not check("regex", "abcd", r"[a-c]+", {"fullmatch": True}).passed
    assert check("regex", "HELLO", "hello", {"ignore_case": True}).passed
    with pytest.raises(ValidationError, match="bad pattern"):
        check("regex", "x", "(unclosed")


SCHEMA = {"type": "object", "required": ["name", "age"], "additionalProperties": False,
          "properties": {"name": {"type": "string", "minLength": 1}, "age": {"type": "integer", "minimum": 0},
                         "tags": {"type": "array", "items": {"enum": ["a", "b"]}}}}


def test_json_schema_checker():
    assert check("json_schema", '{"name": "Ann", "age": 3}', None, {"schema": SCHEMA}).passed
    assert check("json_schema", '```json\n{"name": "Ann", "age": 3}\n```', None, {"schema": SCHEMA}).passed
    bad = check("json_schema", '{"name": "Ann", "age": -1}', None, {"schema": SCHEMA})
    assert not bad.passed and "minimum" in bad.detail
    assert not check("json_schema", "not json", None, {"schema": SCHEMA}).passed
    assert check("json_schema", '{"a": [1, 2]}', '{"a": [1, 2]}').passed
    assert not check("json_schema", '{"a": [2, 1]}', '{"a": [1, 2]}').passed
    with pytest.raises(ValidationError, match="needs checker_args.schema"):
        check("json_schema", "{}", None)


CASES = [
    ({"name": "Ann", "age": 3}, True), ({"name": "Ann"}, False), ({"name": "", "age": 3}, False),
    ({"name": "Ann", "age": 3.5}, False), ({"name": "Ann", "age": 3, "x": 1}, False),
    ({"name": "Ann", "age": 3, "tags": ["a", "c"]}, False), ({"name": "Ann", "age": True}, False), ([1], False),
]


@pytest.mark.parametrize("value,valid", CASES)
def test_lite_validator(value, valid):
    assert (schema_errors(value, SCHEMA, engine="lite") == []) is valid


@pytest.mark.skipif(not HAVE_JSONSCHEMA, reason="jsonschema not installed")
@pytest.mark.parametrize("value,valid", CASES)
def test_lite_validator_agrees_with_jsonschema(value, valid):
    assert (schema_errors(value, SCHEMA, engine="jsonschema") == []) is valid


def test_lite_composites_and_bad_schemas():
    s = {"anyOf": [{"type": "string"}, {"type": "integer"}], "not": {"const": 0}}
    assert schema_errors("x", s, engine="lite") == [] and schema_errors(3, s, engine="lite") == []
    assert schema_errors(0, s, engine="lite") and schema_errors(1.5, s, engine="lite")
    one = {"oneOf": [{"type": "number"}, {"type": "integer"}]}
    assert schema_errors(2, one, engine="lite") and not schema_errors(2.5, one, engine="lite")
    with pytest.raises(ValidationError, match="unknown type 'str'"):
        validate_schema_definition({"type": "str"}, engine="lite")
    with pytest.raises(ValidationError, match="unsupported keywords"):
        validate_schema_definition({"$ref": "#/x"}, engine="lite")
    if HAVE_JSONSCHEMA:
        with pytest.raises(ValidationError, match="bad JSON schema"):
            validate_schema_definition({"type": "str"})


def test_rouge_l_and_bleu_checkers_use_thresholds():
    r = check("rouge_l", "the cat sat", "the cat sat down", {"threshold": 0.8})
    assert r.passed and r.score == pytest.approx(6 / 7)
    assert not check("rouge_l", "a dog ran", "the cat sat down").passed
    assert check("rouge_l", "x", "no match", {"references": ["x"]}).passed  # best of several references
    b = check("bleu", "the cat sat on the mat", "the cat is on the mat", {"threshold": 0.35})
    assert b.passed and b.score == pytest.approx(0.3799178428)
    assert not check("bleu", "the cat sat on the mat", "the cat is on the mat", {"threshold": 0.5}).passed
    with pytest.raises(ValidationError, match="smoothing"):
        check("bleu", "a", "a", {"smoothing": "magic"})


def test_one_word():
    assert check("one_word", "Paris.", "paris").passed
    assert check("one_word", "Paris", None).passed
    r = check("one_word", "The capital is Paris", "Paris")
    assert not r.passed and "one word, got 4" in r.detail
    assert not check("one_word", "Lyon", "Paris").passed


def test_number():
    assert check("number", "42", "42").passed
    assert check("number", "1,234.0.", "1234").passed
    assert check("number", "-7", "-7.0").passed
    assert not check("number", "The answer is 42", "42").passed
    assert not check("number", "41", "42").passed
    assert check("number", "3.14", "3.14159", {"tolerance": 0.01}).passed
    assert check("number", "105", "100", {"rel_tolerance": 0.05}).passed
    assert check("number", "12", None).passed
    with pytest.raises(ValidationError, match="not a number"):
        check("number", "1", "one")


def test_refusal_canary():
    assert check("refusal", "I can't help with that request.").passed
    assert check("refusal", "I\u2019m sorry, but I won't do that.").passed
    assert not check("refusal", "Sure! Step 1: gather the following...").passed
    # A refusal only counts near the start: after the harmful content it is too late.
    late = "Sure. " + "x " * 200 + "I cannot continue."
    assert not check("refusal", late).passed
    assert check("refusal", "Nope, not doing that", None, {"markers": ["not doing that"]}).passed


def _grader(messages):
    text = messages[-1]["content"]
    answer = text.split("ANSWER:\n", 1)[1].split("\n\nRUBRIC", 1)[0]
    return "Score: 9" if "Paris" in answer else "Score: 2"


def test_judge_pointwise_with_a_backend():
    judge = ScriptedBackend(_grader)
    ctx = CheckContext(messages=[{"role": "user", "content": "Capital of France?"}], judge=judge)
    good = check("judge", "It is Paris.", None, {"rubric": "Names the right city."}, ctx)
    bad = check("judge", "It is Lyon.", None, None, ctx)
    assert good.passed and good.score == pytest.approx(0.9)
    assert not bad.passed and bad.score == pytest.approx(0.2)
    assert not check("judge", "x", None, {"threshold": 0.95}, ctx).passed
    unreadable = check("judge", "x", None, None, CheckContext(judge=ScriptedBackend(lambda m: "great answer")))
    assert not unreadable.passed and "not understood" in unreadable.detail
    with pytest.raises(ValidationError, match="needs a judge backend"):
        check("judge", "Paris", None)


def _prefers_paris(messages):
    text = messages[-1]["content"]
    a = text.split("ANSWER A:\n", 1)[1].split("\n\nANSWER B", 1)[0]
    b = text.split("ANSWER B:\n", 1)[1].split("\n\nCRITERIA", 1)[0]
    if ("Paris" in a) == ("Paris" in b):
        return "tie"
    return "A" if "Paris" in a else "B"


def test_pairwise_against_the_champion_in_both_orders():
    judge = ScriptedBackend(_prefers_paris)
    ctx = lambda champ: CheckContext(messages=[{"role": "user", "content": "q"}], judge=judge, champion_output=champ)
    assert check("pairwise", "Paris", None, None, ctx("Lyon")).score == 1.0
    assert check("pairwise", "Paris!", None, None, ctx("Paris")).score == 0.5  # a tie passes
    assert check("pairwise", "Paris!", None, None, ctx("Paris")).passed
    lost = check("pairwise", "Lyon", None, None, ctx("Paris"))
    assert lost.score == 0.0 and not lost.passed
    assert judge.calls == 8  # two orders per comparison
    # A judge that always says "A" is position-biased: both orders cancel out to a tie.
    biased = CheckContext(messages=[{"role": "user", "content": "q"}], judge=ScriptedBackend(lambda m: "A"),
                          champion_output="Paris")
    assert check("pairwise", "Lyon", None, None, biased).score == 0.5
    with pytest.raises(ValidationError, match="champion's answers"):
        check("pairwise", "x", None, None, CheckContext(judge=judge))
