"""``ABTestConfig``: the one configuration object of online experiments (seed 002's names).

>>> cfg = ABTestConfig(initial_challenger_traffic=0.1, min_improvement_threshold=0.05,
...                    enable_auto_promotion=True)
>>> cfg.rule, cfg.primary_metric, cfg.guardrails.max_p95_latency_ratio
('sequential', 'positive_feedback_rate', 1.5)
>>> ABTestConfig.from_dict({"min_duration_hours": 0, "guardrails": {"max_error_rate": 0.02}}).guardrails.max_error_rate
0.02
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from tuneloop.errors import ConfigError, ValidationError
from tuneloop.experiments.canary import DEFAULT_STEPS, validate_steps

__all__ = ["ABTestConfig", "Guardrails", "METRICS", "MODES", "RULES"]

MODES = ("ab", "canary", "shadow", "bandit")
RULES = ("sequential", "weighted")
# name -> (kind, higher_is_better). Binary metrics are rates of 0/1 outcomes.
METRICS: dict[str, tuple[str, bool]] = {
    "positive_feedback_rate": ("binary", True),   # thumbs > 0 or rating >= 4, among rated interactions
    "avg_rating": ("continuous", True),           # mean of 1-5 ratings
    "reward": ("continuous", True),               # interactions.reward (signals package)
    "reward_positive_rate": ("binary", True),     # share of interactions with reward > 0
    "avg_quality_score": ("continuous", True),    # interactions.quality_score
    "avg_latency_ms": ("continuous", False),
    "error_rate": ("binary", False),
}


def _help(text: str, default: Any = None, factory: Any = None) -> Any:
    if factory is not None:
        return field(default_factory=factory, metadata={"help": text})
    return field(default=default, metadata={"help": text})


@dataclass
class Guardrails:
    """Limits whose breach stops an experiment at once, whatever the primary metric says."""

    max_p95_latency_ratio: float = _help("Treatment p95 latency / control p95 latency above this is a breach.", 1.5)
    max_error_rate: float = _help("Treatment error rate proven (Wilson lower bound) above this is a breach.", 0.05)
    min_samples: int = _help("Latencies per arm needed before the latency guardrail judges.", 30)

    def __post_init__(self) -> None:
        if self.max_p95_latency_ratio <= 1.0:
            raise ValidationError("guardrails.max_p95_latency_ratio must be > 1", field="max_p95_latency_ratio")
        if not 0.0 < self.max_error_rate < 1.0:
            raise ValidationError("guardrails.max_error_rate must be in (0, 1)", field="max_error_rate")
        if self.min_samples < 1:
            raise ValidationError("guardrails.min_samples must be >= 1", field="min_samples")


@dataclass
class ABTestConfig:
    """How a challenger is tested against the champion and when it is promoted or rolled back."""

    initial_challenger_traffic: float = _help("Share of users sent to the challenger (A/B mode).", 0.1)
    min_improvement_threshold: float = _help(
        "Relative lift of the primary metric the challenger must show (sequential rule: the lower end "
        "of its 95% confidence sequence must exceed it).", 0.05)
    enable_auto_promotion: bool = _help("Let auto_promote_if_ready() promote a winner.", True)
    promotion_threshold: float | None = _help(
        "Weighted rule: composite improvement needed to promote (default: min_improvement_threshold).", None)
    min_duration_hours: float = _help("Minimum experiment age before promotion (0 for tests and demos).", 48.0)
    min_samples_per_version: int = _help("Minimum analysed interactions per arm before promotion.", 100)
    max_samples_per_version: int | None = _help(
        "Stop an undecided experiment (keep the champion: 'inconclusive') once every arm has this many "
        "observations of the primary metric; None runs until the test decides.", None)
    metrics: list[str] = _help("Metrics of the weighted rule.", factory=lambda: [
        "avg_quality_score", "positive_feedback_rate", "avg_latency_ms"])
    metric_weights: dict[str, float] = _help("Weights of the weighted rule (negative: lower is better).",
                                             factory=lambda: {"avg_quality_score": 0.5,
                                                              "positive_feedback_rate": 0.3,
                                                              "avg_latency_ms": -0.2})
    rule: str = _help("'sequential' (always-valid mSPRT, default) or 'weighted' (seed 002's composite).",
                      "sequential")
    primary_metric: str = _help("Metric the sequential rule decides on.", "positive_feedback_rate")
    alpha: float = _help("Error rate of the sequential test (0.05 = 95% confidence).", 0.05)
    guardrails: Guardrails = _help("Latency and error-rate guardrails.", factory=Guardrails)
    mode: str = _help("'ab', 'canary', 'shadow' or 'bandit'.", "ab")
    canary_steps: tuple[float, ...] = _help("Treatment shares of the canary ramp.", DEFAULT_STEPS)
    canary_min_samples: int = _help("Treatment interactions needed at a canary step before advancing.", 100)
    canary_step_hours: float = _help("Minimum hours at each canary step.", 0.0)
    exploration_floor: float = _help("Bandit: share of traffic each arm keeps at least.", 0.05)
    shadow_rate: float = _help("Shadow: share of users whose requests the challenger also answers.", 1.0)
    sequential_tuning_samples: int = _help(
        "Total samples at which the confidence sequence is tightest (GrowthBook's N*).", 5000)
    srm_threshold: float = _help("Sample-ratio-mismatch p-value below which results are held.", 0.001)
    auto_rollback: bool = _help("Let auto_promote_if_ready() roll back a worse or breaching challenger.", True)

    def __post_init__(self) -> None:
        if isinstance(self.guardrails, Mapping):
            self.guardrails = _build(Guardrails, self.guardrails, "guardrails")
        self.canary_steps = validate_steps(self.canary_steps)
        self.metrics = list(self.metrics)
        self.metric_weights = {str(k): float(v) for k, v in dict(self.metric_weights).items()}
        self._validate()

    def _validate(self) -> None:
        def bad(name: str, msg: str) -> ValidationError:
            return ValidationError(f"ABTestConfig.{name}: {msg}", field=name)

        if not 0.0 < self.initial_challenger_traffic < 1.0:
            raise bad("initial_challenger_traffic", "must be in (0, 1)")
        for name in ("min_improvement_threshold", "min_duration_hours", "canary_step_hours"):
            if getattr(self, name) < 0:
                raise bad(name, "must be >= 0")
        if self.promotion_threshold is not None and self.promotion_threshold < 0:
            raise bad("promotion_threshold", "must be >= 0")
        if self.min_samples_per_version < 2:
            raise bad("min_samples_per_version", "must be >= 2")
        if self.max_samples_per_version is not None and self.max_samples_per_version < self.min_samples_per_version:
            raise bad("max_samples_per_version", f"must be >= min_samples_per_version ({self.min_samples_per_version})")
        if self.rule not in RULES:
            raise bad("rule", f"{self.rule!r} is not one of {', '.join(RULES)}")
        if self.mode not in MODES:
            raise bad("mode", f"{self.mode!r} is not one of {', '.join(MODES)}")
        if self.primary_metric not in METRICS or not METRICS[self.primary_metric][1]:
            ok = ", ".join(m for m, (_, up) in METRICS.items() if up)
            raise bad("primary_metric", f"{self.primary_metric!r} is not one of {ok}")
        unknown = [m for m in [*self.metrics, *self.metric_weights] if m not in METRICS]
        if unknown:
            raise bad("metrics", f"unknown metric(s) {unknown}; known: {', '.join(METRICS)}")
        missing = [m for m in self.metrics if m not in self.metric_weights]
        if missing:
            raise bad("metric_weights", f"no weight for metric(s) {missing}")
        if not 0.0 < self.alpha < 0.5:
            raise bad("alpha", "must be in (0, 0.5)")
        if not 0.0 <= self.exploration_floor <= 0.5:
            raise bad("exploration_floor", "must be in [0, 0.5]")
        if not 0.0 < self.shadow_rate <= 1.0:
            raise bad("shadow_rate", "must be in (0, 1]")
        if self.sequential_tuning_samples < 10 or self.canary_min_samples < 1:
            raise bad("sequential_tuning_samples", "must be >= 10 (canary_min_samples >= 1)")
        if not 0.0 < self.srm_threshold < 0.5:
            raise bad("srm_threshold", "must be in (0, 0.5)")

    @property
    def effective_promotion_threshold(self) -> float:
        return self.min_improvement_threshold if self.promotion_threshold is None else self.promotion_threshold

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["canary_steps"] = list(self.canary_steps)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "ABTestConfig":
        """From a settings section (seed 002's ``ab_test_config``); unknown keys raise ConfigError."""
        return _build(cls, data or {}, "ab_test_config")


def _build(cls: type, data: Mapping[str, Any], where: str) -> Any:
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {', '.join(sorted(names))}", keys=unknown)
    try:
        return cls(**dict(data))
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
