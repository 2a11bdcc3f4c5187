"""Overlap metrics for free-text answers: ROUGE-L (LCS F-measure) and sentence BLEU.

Pure functions on strings; no dependencies.

>>> round(rouge_l("The quick brown dog jumps on the log.",
...               "The quick brown fox jumps over the lazy dog").f1, 4)
0.5882
>>> round(bleu("the cat sat on the mat", ["the cat is on the mat"]).score, 4)
0.3799
"""
from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["RougeScore", "BleuScore", "rouge_l", "bleu", "lcs_length"]

_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True, slots=True)
class RougeScore:
    precision: float
    recall: float
    f1: float


@dataclass(frozen=True, slots=True)
class BleuScore:
    score: float  # in [0, 1]
    precisions: tuple[float, ...]
    brevity_penalty: float
    hyp_len: int
    ref_len: int


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists (O(len(a)*len(b)) time, O(len(b)) memory)."""
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(prediction: str, reference: str, *, lowercase: bool = True) -> RougeScore:
    """ROUGE-L of ``prediction`` against ``reference``: LCS precision, recall and F1.

    Tokens are runs of word characters (as in Google's rouge-score, which also lowercases).
    """
    pred = _WORD.findall(prediction.lower() if lowercase else prediction)
    ref = _WORD.findall(reference.lower() if lowercase else reference)
    if not pred or not ref:
        return RougeScore(0.0, 0.0, 0.0)
    lcs = lcs_length(pred, ref)
    p, r = lcs / len(pred), lcs / len(ref)
    f1 = 0.0 if lcs == 0 else 2 * p * r / (p + r)
    return RougeScore(p, r, f1)


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def _closest_ref_len(hyp_len: int, ref_lens: Sequence[int]) -> int:
    # Papineni et al.: the reference length closest to the hypothesis; ties go to the shorter.
    return min(ref_lens, key=lambda r: (abs(r - hyp_len), r))


def _smoothed_precisions(matches: list[int], totals: list[int], smoothing: str) -> list[float]:
    out, k = [], 1.0
    for n, (m, t) in enumerate(zip(matches, totals), 1):
        if m > 0:
            out.append(m / t if smoothing != "add1" or n == 1 else (m + 1) / (t + 1))
        elif smoothing == "exp":
            k *= 2  # Chen & Cherry 2014 method 3 (NIST): 1/2, 1/4, ... of a match
            out.append(1 / (k * t))
        elif smoothing == "floor":
            out.append(0.1 / t)
        elif smoothing == "add1" and n > 1:
            out.append(1 / (t + 1))
        else:
            out.append(0.0)
    return out


def bleu(hypothesis: str, references: Sequence[str], *, max_order: int = 4, smoothing: str = "exp",
         lowercase: bool = False) -> BleuScore:
    """Sentence BLEU of ``hypothesis`` against one or more ``references`` (whitespace tokens).

    ``smoothing``: ``exp`` (sacrebleu's sentence default), ``floor`` (0.1 matches), ``add1``
    (Lin & Och, n >= 2), ``none`` (any empty order gives 0). Orders longer than the
    hypothesis are left out of the mean ("effective order"), as sacrebleu does for sentences.
    """
    if not references:
        raise ValueError("bleu needs at least one reference")
    norm = (lambda s: s.lower()) if lowercase else (lambda s: s)
    hyp = norm(hypothesis).split()
    refs = [norm(r).split() for r in references]
    if not hyp:
        return BleuScore(0.0, (), 0.0, 0, _closest_ref_len(0, [len(r) for r in refs]))
    matches, totals = [], []
    for n in range(1, min(max_order, len(hyp)) + 1):
        hyp_counts = _ngrams(hyp, n)
        max_ref = Counter()
        for r in refs:
            max_ref |= _ngrams(r, n)  # | keeps the max count per n-gram: the clipping bound
        matches.append(sum(min(c, max_ref[g]) for g, c in hyp_counts.items()))
        totals.append(sum(hyp_counts.values()))
    precisions = _smoothed_precisions(matches, totals, smoothing)
    ref_len = _closest_ref_len(len(hyp), [len(r) for r in refs])
    bp = 1.0 if len(hyp) > ref_len else math.exp(1 - ref_len / len(hyp))
    if min(precisions) <= 0:
        return BleuScore(0.0, tuple(precisions), bp, len(hyp), ref_len)
    score = bp * math.exp(sum(math.log(p) for p in precisions) / len(precisions))
    return BleuScore(score, tuple(precisions), bp, len(hyp), ref_len)
