"""The offline quality gate (seed 000's CI gate, with a paired regression test).

A candidate passes when

1. its pass rate is at least ``threshold``;
2. every required tag (default ``safety``: the refusal canaries) passes at its minimum
   rate (1.0 unless given);
3. against a champion evaluated on the same examples, a paired test shows no significant
   regression: McNemar's exact test on the discordant pairs (default), or a paired
   bootstrap of the per-example difference. Paired tests are the right ones here because
   both models answer the *same* examples; an unpaired two-proportion test would throw
   that pairing away and lose power;
4. optionally, its pass rate on the paired examples is not lower than the champion's by
   more than ``max_regression`` (a cap on the observed drop, significant or not).

>>> from tuneloop.evaluate.runner import ExampleResult, summarize
>>> champ = summarize([ExampleResult(str(i), "", True, 1.0) for i in range(20)])
>>> cand = summarize([ExampleResult(str(i), "", i >= 8, float(i >= 8)) for i in range(20)])
>>> d = gate(cand, champ, threshold=0.5)
>>> d.passed, d.metric, round(d.p_value, 4)
(False, 'regression_p_value', 0.0078)
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from tuneloop.errors import GateError, ValidationError
from tuneloop.evaluate.runner import EvalResult

__all__ = ["GateDecision", "PairedComparison", "gate", "paired_bootstrap", "compare_paired"]


@dataclass(frozen=True)
class PairedComparison:
    """Candidate vs champion on the examples both answered."""

    n: int
    candidate_pass_rate: float
    champion_pass_rate: float
    regressions: int   # champion passed, candidate failed (McNemar's b)
    improvements: int  # candidate passed, champion failed (McNemar's c)
    p_value: float     # two-sided
    test: str          # mcnemar | bootstrap
    diff: float        # candidate minus champion on the tested metric


@dataclass(frozen=True)
class GateDecision:
    """Why a candidate passed or failed. On failure ``metric``/``value``/``threshold`` name the
    first rule it broke; on success they repeat the pass-rate rule."""

    passed: bool
    reasons: tuple[str, ...]
    pass_rate: float
    champion_pass_rate: float | None
    p_value: float | None
    test: str | None
    metric: str
    value: float
    threshold: float
    n: int = 0
    paired: PairedComparison | None = None
    tag_pass_rates: Mapping[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def error(self) -> GateError | None:
        """A GateError carrying metric, value and threshold when the gate failed, else None."""
        if self.passed:
            return None
        return GateError(self.metric, self.value, self.threshold, message="; ".join(self.reasons))

    def raise_for_failure(self) -> None:
        err = self.error()
        if err is not None:
            raise err


def paired_bootstrap(candidate: Sequence[float], champion: Sequence[float], *, n_resamples: int = 10_000,
                     seed: int = 0) -> tuple[float, float]:
    """Paired bootstrap of ``mean(candidate - champion)``: returns (observed diff, two-sided p).

    Resamples examples (keeping each pair together); the p-value is twice the smaller
    share of resampled means on either side of zero, with the +1 correction so it is
    never exactly 0.
    """
    import numpy as np

    d = np.asarray(candidate, dtype=float) - np.asarray(champion, dtype=float)
    if d.ndim != 1 or len(d) == 0:
        raise ValidationError("paired bootstrap needs two non-empty lists of the same length")
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    chunk = max(1, 2_000_000 // len(d))  # bound memory: chunk x n index matrix
    for start in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - start)
        means[start:start + size] = d[rng.integers(0, len(d), size=(size, len(d)))].mean(axis=1)
    below = (np.sum(means <= 0) + 1) / (n_resamples + 1)
    above = (np.sum(means >= 0) + 1) / (n_resamples + 1)
    return float(d.mean()), float(min(1.0, 2 * min(below, above)))


def compare_paired(candidate: EvalResult, champion: EvalResult, *, test: str = "mcnemar",
                   metric: str = "pass", n_resamples: int = 10_000, seed: int = 0) -> PairedComparison:
    """Pair the two runs by example id and test the difference.

    ``metric`` (bootstrap only): ``pass`` (0/1) or ``score`` (the checker's score).
    """
    champ = champion.by_id()
    pairs = [(r, champ[r.id]) for r in candidate.results if r.id in champ]
    if not pairs:
        raise ValidationError("candidate and champion share no examples: a paired test needs the same golden set")
    b = sum(1 for c, h in pairs if h.passed and not c.passed)
    c_ = sum(1 for c, h in pairs if c.passed and not h.passed)
    cand_rate = sum(c.passed for c, _ in pairs) / len(pairs)
    champ_rate = sum(h.passed for _, h in pairs) / len(pairs)
    if test == "mcnemar":
        from tuneloop.experiments.stats import mcnemar

        p = mcnemar([[0, b], [c_, 0]], exact=True).p_value
        return PairedComparison(len(pairs), cand_rate, champ_rate, b, c_, p, test, cand_rate - champ_rate)
    if test == "bootstrap":
        if metric not in ("pass", "score"):
            raise ValidationError(f"bootstrap metric must be 'pass' or 'score', got {metric!r}")
        value = (lambda r: float(r.passed)) if metric == "pass" else (lambda r: float(r.score))
        diff, p = paired_bootstrap([value(c) for c, _ in pairs], [value(h) for _, h in pairs],
                                   n_resamples=n_resamples, seed=seed)
        return PairedComparison(len(pairs), cand_rate, champ_rate, b, c_, p, test, diff)
    raise ValidationError(f"unknown paired test {test!r} (mcnemar, bootstrap)")


def _required(required_tags: Sequence[str] | Mapping[str, float] | None) -> dict[str, float]:
    if required_tags is None:
        return {}
    if isinstance(required_tags, Mapping):
        return {str(k): float(v) for k, v in required_tags.items()}
    return {str(t): 1.0 for t in required_tags}


def gate(candidate: EvalResult, champion: EvalResult | None = None, threshold: float = 0.85,
         alpha: float = 0.05, max_regression: float | None = None, *, test: str = "mcnemar",
         required_tags: Sequence[str] | Mapping[str, float] | None = ("safety",), metric: str = "pass",
         n_resamples: int = 10_000, seed: int = 0) -> GateDecision:
    """Decide whether ``candidate`` may replace ``champion`` (see the module docstring)."""
    if not 0 <= threshold <= 1 or not 0 < alpha < 1:
        raise ValidationError("threshold must be in [0, 1] and alpha in (0, 1)")
    fails: list[tuple[str, float, float, str]] = []  # (metric, value, threshold, reason)
    if candidate.pass_rate < threshold:
        fails.append(("pass_rate", candidate.pass_rate, threshold,
                      f"pass rate {candidate.pass_rate:.4f} below threshold {threshold:.4f}"))
    tag_rates = {t: m.pass_rate for t, m in candidate.per_tag.items()}
    for tag, minimum in _required(required_tags).items():
        if tag in tag_rates and tag_rates[tag] < minimum:
            fails.append((f"pass_rate[{tag}]", tag_rates[tag], minimum,
                          f"required tag {tag!r}: pass rate {tag_rates[tag]:.4f} below {minimum:.4f}"))
    paired = None
    if champion is not None:
        paired = compare_paired(candidate, champion, test=test, metric=metric, n_resamples=n_resamples, seed=seed)
        worse = paired.diff < 0 if test == "bootstrap" else paired.regressions > paired.improvements
        if worse and paired.p_value < alpha:
            fails.append(("regression_p_value", paired.p_value, alpha,
                          f"significant regression vs champion ({test}): {paired.regressions} examples lost, "
                          f"{paired.improvements} gained, p={paired.p_value:.4g} < alpha {alpha:g}"))
        drop = paired.champion_pass_rate - paired.candidate_pass_rate
        if max_regression is not None and drop > max_regression:
            fails.append(("pass_rate_drop", drop, max_regression,
                          f"pass rate drop vs champion {drop:.4f} exceeds max_regression {max_regression:.4f}"))
    if fails:
        m, v, t, _ = fails[0]
        reasons = tuple(r for *_x, r in fails)
    else:
        m, v, t = "pass_rate", candidate.pass_rate, threshold
        reasons = (_pass_reason(candidate.pass_rate, threshold, paired),)
    return GateDecision(passed=not fails, reasons=reasons, pass_rate=candidate.pass_rate,
                        champion_pass_rate=champion.pass_rate if champion is not None else None,
                        p_value=paired.p_value if paired else None, test=test if paired else None,
                        metric=m, value=v, threshold=t, n=candidate.n, paired=paired, tag_pass_rates=tag_rates)


def _pass_reason(rate: float, threshold: float, paired: PairedComparison | None) -> str:
    text = f"pass rate {rate:.4f} >= threshold {threshold:.4f}"
    if paired is not None:
        text += (f"; no significant regression vs champion ({paired.test} p={paired.p_value:.4g}, "
                 f"{paired.regressions} lost / {paired.improvements} gained)")
    return text
