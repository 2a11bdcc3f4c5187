"""From the store to a decision: per-arm data of an experiment, then :func:`compare`.

:func:`collect_arms` reads interactions and feedback of one experiment (a few grouped
queries, no per-row Python except feedback and latencies); :func:`compare` is pure: arm
data + config in, a frozen :class:`Comparison` out, with its decision and the reason.

Analysis unit: the interaction (for feedback metrics, the rated interaction). Assignment
is sticky per user, so the SRM check counts users (plus anonymous requests, which are
randomized one by one).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import sqlalchemy as sa

from tuneloop.experiments import stats as st
from tuneloop.experiments.config import METRICS, ABTestConfig
from tuneloop.experiments.records import Experiment
from tuneloop.registry.versions import jsonable
from tuneloop.store import Database, schema

__all__ = ["ArmData", "Comparison", "collect_arms", "collect_units", "compare"]

_i, _f = schema.interactions, schema.feedback
_SOURCE_RANK = {"user": 3, "annotator": 2, "judge": 1}  # whose rating counts when several exist
DECISIONS = ("promote", "rollback", "stop", "continue", "hold", "advance")


@dataclass(frozen=True, eq=False)
class ArmData:
    """What one arm's traffic looks like: counts, latencies, and per-metric statistics."""

    arm: str
    version_id: str
    interactions: int = 0
    units: int = 0
    errors: int = 0
    latencies: np.ndarray = field(default_factory=lambda: np.empty(0))
    summaries: dict[str, st.MetricSummary] = field(default_factory=dict)  # continuous metrics
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)      # binary metrics: (successes, n)

    def n(self, metric: str) -> int:
        if metric in self.counts:
            return self.counts[metric][1]
        return self.summaries[metric].n if metric in self.summaries else 0

    def value(self, metric: str) -> float:
        if metric in self.counts:
            s, n = self.counts[metric]
            return s / n if n else float("nan")
        return self.summaries[metric].mean if metric in self.summaries else float("nan")

    def summary(self) -> dict[str, float]:
        out: dict[str, float] = {"interactions": self.interactions, "units": self.units}
        for m in METRICS:
            if self.n(m):
                out[m] = self.value(m)
                out[f"{m}_n"] = self.n(m)
        if self.latencies.size:
            out["p95_latency_ms"] = float(np.quantile(self.latencies, 0.95))
        return out


@dataclass(frozen=True)
class Comparison:
    """The state of an experiment at one look: who wins (if anyone yet), by how much, how sure."""

    experiment_id: str
    mode: str
    rule: str
    primary_metric: str
    control_id: str
    treatment_id: str
    winner: str | None          # version id; None while undecided
    improvement: float          # relative lift of the primary metric (weighted rule: composite)
    p_value: float              # always-valid p-value (weighted rule: fixed-horizon)
    ci: tuple[float, float]     # confidence sequence of the improvement
    lift_scale: str             # relative | absolute (when the control mean is <= 0)
    samples: dict[str, int]
    metrics: dict[str, dict[str, float]]
    srm: st.SRMResult | None
    guardrails: tuple[st.GuardrailResult, ...]
    decision: str               # promote | rollback | stop | continue | hold | advance
    reason: str
    duration_hours: float
    sequential: st.SequentialResult | None = None
    fixed_horizon: st.TestResult | None = None

    @property
    def breached(self) -> list[st.GuardrailResult]:
        return [g for g in self.guardrails if g.breached]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (NaN -> None): what is stored as the experiment's decision."""
        return jsonable({f.name: getattr(self, f.name) for f in fields(self)})


# ----------------------------------------------------------------------------- reading the store
def _where(exp: Experiment, arms: tuple[str, ...], since: float | None) -> list[Any]:
    cond = [_i.c.experiment_id == exp.id, _i.c.arm.in_(arms)]
    if since is not None:
        cond.append(_i.c.ts >= since)
    return cond


def _tuples(db: Database, stmt: sa.Select) -> list[tuple]:
    with db.connect() as conn:
        return [tuple(r) for r in conn.execute(stmt)]


def collect_units(db: Database, exp: Experiment, since: float | None = None) -> dict[str, tuple[int, int]]:
    """``{arm: (interactions, units)}``: units = distinct users + anonymous requests."""
    anon = sa.func.sum(sa.case((_i.c.user_id.is_(None), 1), else_=0))
    stmt = (sa.select(_i.c.arm, sa.func.count(), sa.func.count(sa.distinct(_i.c.user_id)), anon)
            .where(*_where(exp, ("control", exp.treatment_arm), since)).group_by(_i.c.arm))
    return {arm: (int(n), int(users) + int(anon or 0)) for arm, n, users, anon in _tuples(db, stmt)}


def _column_sums(db: Database, cond: list[Any]) -> dict[str, tuple]:
    """Per arm: n/sum/sum of squares of reward and quality_score, positive rewards, errors."""
    r, q = _i.c.reward, _i.c.quality_score

    def count_if(expr: Any) -> Any:
        return sa.func.sum(sa.case((expr, 1), else_=0))

    stmt = (sa.select(_i.c.arm, sa.func.count(r), sa.func.sum(r), sa.func.sum(r * r), count_if(r > 0),
                      sa.func.count(q), sa.func.sum(q), sa.func.sum(q * q), count_if(_i.c.status == "error"))
            .where(*cond).group_by(_i.c.arm))
    return {row[0]: tuple(0 if v is None else v for v in row[1:]) for row in _tuples(db, stmt)}


def collect_arms(db: Database, exp: Experiment, since: float | None = None) -> dict[str, ArmData]:
    """Everything :func:`compare` needs about both arms of ``exp``."""
    arms = ("control", exp.treatment_arm)
    versions = {"control": exp.control_id, exp.treatment_arm: exp.treatment_id}
    cond = _where(exp, arms, since)
    sums = _column_sums(db, cond)
    lat: dict[str, list[float]] = {a: [] for a in arms}
    for arm, ms in _tuples(db, sa.select(_i.c.arm, _i.c.latency_ms).where(*cond, _i.c.latency_ms.isnot(None))):
        lat[arm].append(ms)
    units = collect_units(db, exp, since)
    feedback = _feedback_outcomes(db, cond)
    out = {}
    for arm in arms:
        n_int, n_units = units.get(arm, (0, 0))
        rn, rs, rss, rpos, qn, qs, qss, errors = sums.get(arm, (0,) * 8)
        summaries, counts = {}, {}
        if rn:
            summaries["reward"] = st.MetricSummary.from_sums(int(rn), float(rs), float(rss))
            counts["reward_positive_rate"] = (int(rpos), int(rn))
        if qn:
            summaries["avg_quality_score"] = st.MetricSummary.from_sums(int(qn), float(qs), float(qss))
        if n_int:
            counts["error_rate"] = (int(errors), n_int)
        latencies = np.asarray(lat[arm], dtype=float)
        if latencies.size:
            summaries["avg_latency_ms"] = st.summarize(latencies)
        positive, ratings = feedback.get(arm, ([], []))
        if positive:
            counts["positive_feedback_rate"] = (int(sum(positive)), len(positive))
        if ratings:
            summaries["avg_rating"] = st.summarize(ratings)
        out[arm] = ArmData(arm, versions[arm], n_int, n_units, int(errors), latencies, summaries, counts)
    return out


def _feedback_outcomes(db: Database, cond: list[Any]) -> dict[str, tuple[list[int], list[float]]]:
    """Per arm: one positive/negative outcome per rated interaction, and the 1-5 ratings.

    Thumbs > 0 or a rating >= 4 is positive. When an interaction has several ratings, a
    user's beats an annotator's beats a judge's, and the latest wins among equals.
    """
    stmt = (sa.select(_i.c.arm, _f.c.interaction_id, _f.c.kind, _f.c.value, _f.c.source, _f.c.ts)
            .select_from(_f.join(_i, _f.c.interaction_id == _i.c.id))
            .where(*cond, _f.c.kind.in_(("thumbs", "rating")), _f.c.value.isnot(None)))
    best: dict[str, tuple[tuple[int, float], str, str, float]] = {}
    with db.connect() as conn:
        for arm, iid, kind, value, source, ts in conn.execute(stmt):
            key = (_SOURCE_RANK.get(source, 0), ts)
            if iid not in best or key > best[iid][0]:
                best[iid] = (key, arm, kind, float(value))
    out: dict[str, tuple[list[int], list[float]]] = {}
    for _, arm, kind, value in best.values():
        positive, ratings = out.setdefault(arm, ([], []))
        positive.append(int(value > 0 if kind == "thumbs" else value >= 4))
        if kind == "rating":
            ratings.append(value)
    return out


# ----------------------------------------------------------------------------- deciding
def compare(exp: Experiment, arms: Mapping[str, ArmData], cfg: ABTestConfig, *, duration_hours: float,
            srm: st.SRMResult | None, p_min_before: float | None = None) -> Comparison:
    """Guardrails, SRM and the rule's test on the primary metric -> a :class:`Comparison`."""
    c, t = arms["control"], arms[exp.treatment_arm]
    g = cfg.guardrails
    guardrails = (st.guardrail_latency(c.latencies, t.latencies, max_ratio=g.max_p95_latency_ratio,
                                       min_samples=g.min_samples),
                  st.guardrail_error_rate(t.errors, t.interactions, max_rate=g.max_error_rate, alpha=cfg.alpha))
    seq, fixed, scale = _primary_tests(c, t, cfg)
    duration_ok = duration_hours >= cfg.min_duration_hours
    common = dict(experiment_id=exp.id, mode=exp.mode, rule=cfg.rule, primary_metric=cfg.primary_metric,
                  control_id=exp.control_id, treatment_id=exp.treatment_id, lift_scale=scale,
                  samples={"control": c.n(cfg.primary_metric), exp.treatment_arm: t.n(cfg.primary_metric)},
                  metrics={"control": c.summary(), exp.treatment_arm: t.summary()}, srm=srm,
                  guardrails=guardrails, duration_hours=duration_hours, sequential=seq, fixed_horizon=fixed)
    if cfg.rule == "weighted":
        composite = _composite(c, t, cfg)
        samples_ok = min(c.interactions, t.interactions) >= cfg.min_samples_per_version
        decision, reason = _decide_weighted(cfg, composite, guardrails, srm, samples_ok, duration_ok)
        rel = _relative_ci(fixed, c.value(cfg.primary_metric)) if fixed else (math.nan, math.nan)
        improvement, p, ci = composite, (fixed.p_value if fixed else math.nan), rel
    else:
        p = min(seq.p_value, p_min_before) if seq and p_min_before is not None else (seq.p_value if seq else 1.0)
        samples_ok = min(c.n(cfg.primary_metric), t.n(cfg.primary_metric)) >= cfg.min_samples_per_version
        decision, reason = _decide_sequential(cfg, seq, p, scale, guardrails, srm, samples_ok, duration_ok,
                                              common["samples"], duration_hours)
        improvement, ci = (seq.estimate, seq.ci) if seq else (math.nan, (math.nan, math.nan))
    winner = exp.treatment_id if decision == "promote" else exp.control_id if decision in ("rollback", "stop") else None
    return Comparison(winner=winner, improvement=improvement, p_value=p, ci=ci, decision=decision,
                      reason=reason, **common)


def _primary_tests(c: ArmData, t: ArmData, cfg: ABTestConfig):
    m = cfg.primary_metric
    if min(c.n(m), t.n(m)) < 2:
        return None, None, "relative"
    relative = c.value(m) > 0
    kw = dict(alpha=cfg.alpha, relative=relative, planned_n=cfg.sequential_tuning_samples)
    if METRICS[m][0] == "binary":
        (sc, nc), (sx, nx) = c.counts[m], t.counts[m]
        seq = st.msprt_binary(sc, nc, sx, nx, **kw)
        fixed = st.two_proportion_ztest(sc, nc, sx, nx, alpha=cfg.alpha)
    else:
        seq = st.msprt(c.summaries[m], t.summaries[m], **kw)
        fixed = st.welch_ttest_from_stats(c.summaries[m], t.summaries[m], alpha=cfg.alpha)
    return seq, fixed, "relative" if relative else "absolute"


def _fmt(x: float, scale: str) -> str:
    return f"{x:+.1%}" if scale == "relative" else f"{x:+.4g}"


def _decide_sequential(cfg, seq, p, scale, guardrails, srm, samples_ok, duration_ok, samples, hours):
    breached = [g for g in guardrails if g.breached]
    if breached:
        return "rollback", "guardrail breached: " + "; ".join(
            f"{g.name}={g.value:.3g} > {g.threshold:.3g} ({g.detail})" for g in breached)
    if srm is not None and srm.mismatch:
        return "hold", (f"sample ratio mismatch (chi2={srm.chi2:.1f}, p={srm.p_value:.2g}; observed "
                        f"{list(srm.observed)} vs expected {[round(e) for e in srm.expected]}): check "
                        "routing and logging before trusting the results")
    if seq is None:
        return "continue", f"waiting for data: {cfg.primary_metric} has {samples} observations"
    lo, hi = seq.ci
    thr = cfg.min_improvement_threshold
    ci_txt = f"lift {_fmt(seq.estimate, scale)}, {1 - cfg.alpha:.0%} CI [{_fmt(lo, scale)}, {_fmt(hi, scale)}]"
    if hi < 0:
        return "rollback", f"challenger significantly worse on {cfg.primary_metric}: {ci_txt}, always-valid p={p:.3g}"
    if not samples_ok:
        return "continue", f"{ci_txt}; need {cfg.min_samples_per_version} observations per arm, have {samples}"
    if not duration_ok:
        return "continue", f"{ci_txt}; running {hours:.1f} h of the required {cfg.min_duration_hours:g} h"
    if lo > thr:
        return "promote", f"{ci_txt} is above the {_fmt(thr, scale)} threshold, always-valid p={p:.3g}"
    if hi < thr:
        return "stop", f"futility: {ci_txt} excludes a lift of {_fmt(thr, scale)}"
    cap = cfg.max_samples_per_version
    if cap is not None and min(samples.values()) >= cap:
        return "stop", f"inconclusive after {cap} observations per arm: {ci_txt}; the champion stays"
    return "continue", f"{ci_txt} does not yet clear the {_fmt(thr, scale)} threshold"


def _composite(c: ArmData, t: ArmData, cfg: ABTestConfig) -> float:
    """Seed 002's weighted score as a sum of weighted relative changes (so ms and rates mix)."""
    total = 0.0
    for m in cfg.metrics:
        vc, vt = c.value(m), t.value(m)
        if math.isfinite(vc) and math.isfinite(vt) and vc != 0:
            total += cfg.metric_weights[m] * (vt - vc) / abs(vc)
    return total


def _decide_weighted(cfg, composite, guardrails, srm, samples_ok, duration_ok):
    breached = [g for g in guardrails if g.breached]
    if breached:
        return "rollback", "guardrail breached: " + "; ".join(f"{g.name}={g.value:.3g}" for g in breached)
    if srm is not None and srm.mismatch:
        return "hold", f"sample ratio mismatch (p={srm.p_value:.2g})"
    if not samples_ok or not duration_ok:
        return "continue", f"composite {composite:+.1%}; waiting for samples/duration"
    thr = cfg.effective_promotion_threshold
    if composite > thr:
        return "promote", f"weighted composite improvement {composite:+.1%} > {thr:.1%}"
    if composite < -thr:
        return "rollback", f"weighted composite change {composite:+.1%} < {-thr:.1%}"
    return "continue", f"weighted composite {composite:+.1%} within +/-{thr:.1%}"


def _relative_ci(fixed: st.TestResult, control_mean: float) -> tuple[float, float]:
    if not control_mean or not math.isfinite(control_mean):
        return fixed.ci
    return fixed.ci[0] / control_mean, fixed.ci[1] / control_mean
