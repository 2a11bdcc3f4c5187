"""ROUGE-L and BLEU against published and hand-computed values."""
from __future__ import annotations

import math

import pytest

from tuneloop.evaluate.text_metrics import bleu, lcs_length, rouge_l


def test_lcs_length():
    assert lcs_length(list("ABCBDAB"), list("BDCABA")) == 4  # the CLRS textbook example
    assert lcs_length([], ["a"]) == 0
    assert lcs_length(["a", "b"], ["a", "b"]) == 2


def test_rouge_l_matches_the_rouge_score_readme():
    # google-research/rouge README: score(target, prediction) -> rougeL P=0.625 R=0.5556 F=0.5882
    s = rouge_l("The quick brown dog jumps on the log.", "The quick brown fox jumps over the lazy dog")
    assert s.precision == pytest.approx(0.625)
    assert s.recall == pytest.approx(5 / 9)
    assert s.f1 == pytest.approx(0.5882352941176471)


def test_rouge_l_edges():
    assert rouge_l("", "a b").f1 == 0.0
    assert rouge_l("x y", "a b").f1 == 0.0
    assert rouge_l("A B", "a b").f1 == 1.0
    assert rouge_l("A B", "a b", lowercase=False).f1 == 0.0


H1 = "It is a guide to action which ensures that the military always obeys the commands of the party"
R1 = "It is a guide to action that ensures that the military will forever heed Party commands"
R2 = "It is the guiding principle which guarantees the military forces always being under the command of the Party"
R3 = "It is the practical guide for the army always to heed the directions of the party"


def test_bleu_textbook_example():
    # Papineni et al. (2002) example sentences; NLTK's sentence_bleu docs give 0.5045...
    s = bleu(H1, [R1, R2, R3])
    assert s.score == pytest.approx(0.5045666840058485, abs=1e-12)
    assert s.precisions == pytest.approx((17 / 18, 10 / 17, 7 / 16, 4 / 15))
    assert s.brevity_penalty == 1.0 and s.ref_len == 18


def test_bleu_hand_computed_with_exp_smoothing():
    # p1=5/6, p2=3/5, p3=1/4, no 4-gram match -> exp smoothing 1/(2*3)
    s = bleu("the cat sat on the mat", ["the cat is on the mat"])
    assert s.precisions == pytest.approx((5 / 6, 3 / 5, 1 / 4, 1 / 6))
    assert s.score == pytest.approx((5 / 6 * 3 / 5 * 1 / 4 * 1 / 6) ** 0.25)
    assert bleu("the cat sat on the mat", ["the cat is on the mat"], smoothing="none").score == 0.0
    floor = bleu("the cat sat on the mat", ["the cat is on the mat"], smoothing="floor")
    assert floor.precisions[3] == pytest.approx(0.1 / 3)


def test_bleu_brevity_penalty_and_clipping():
    # "the the the the" vs "the cat": unigram matches clip at 1 of 4.
    s = bleu("the the the the", ["the cat"], max_order=1)
    assert s.precisions == (0.25,) and s.brevity_penalty == 1.0
    short = bleu("the cat", ["the cat sat on the mat"], max_order=2)
    assert short.brevity_penalty == pytest.approx(math.exp(1 - 6 / 2))
    assert short.score == pytest.approx(math.exp(1 - 3))
    assert bleu("", ["a"]).score == 0.0
    with pytest.raises(ValueError):
        bleu("a", [])
