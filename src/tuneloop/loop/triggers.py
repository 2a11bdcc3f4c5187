"""Retraining triggers (seed 002's ``TriggerConfig``), each check recorded with its reason.

>>> cfg = TriggerConfig(min_new_samples=100, cooldown_hours=0)
>>> cfg.enable_sample_count
True

Triggers:
- sample count: ``min_new_samples`` interactions since the last cycle whose quality is at
  least ``min_quality_score`` (quality_score, or a positive reward where no score exists);
- scheduled: ``schedule_interval_hours`` since the last cycle;
- quality drop: mean quality over the last ``quality_window_hours`` fell by more than
  ``quality_drop_threshold`` (relative) against the window before;
- error rate: share of negative explicit feedback over ``error_window_hours`` above
  ``error_rate_threshold``;
- satisfaction trend (seed 000): the slope of daily satisfaction is significantly negative;
- drift: the newest embedding drift report says drifted;
- manual: ``tuneloop loop trigger``.
A cooldown (``cooldown_hours`` since the last cycle started) holds every automatic trigger.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa

from tuneloop.errors import ConfigError
from tuneloop.ids import new_id, now
from tuneloop.store import Database, schema

HOUR = 3600.0


@dataclass
class TriggerConfig:
    """When the loop retrains. Field names follow seed 002's JSON config."""

    enable_sample_count: bool = field(default=True, metadata={"help": "fire after N new quality samples"})
    min_new_samples: int = field(default=1000, metadata={"help": "new quality samples needed"})
    min_quality_score: float = field(default=0.7, metadata={"help": "quality a sample needs to count"})
    enable_scheduled: bool = field(default=False, metadata={"help": "fire on a fixed schedule"})
    schedule_interval_hours: float = field(default=168.0, metadata={"help": "hours between scheduled cycles"})
    enable_quality_drop: bool = field(default=True, metadata={"help": "fire when quality drops"})
    quality_drop_threshold: float = field(default=0.1, metadata={"help": "relative drop that fires (0.1 = 10%)"})
    quality_window_hours: float = field(default=24.0, metadata={"help": "window compared with the one before"})
    enable_error_rate: bool = field(default=True, metadata={"help": "fire on a high negative-feedback rate"})
    error_rate_threshold: float = field(default=0.2, metadata={"help": "share of negative feedback that fires"})
    error_window_hours: float = field(default=24.0, metadata={"help": "window of the error rate"})
    min_feedback_for_rates: int = field(default=30, metadata={"help": "feedback needed before rate triggers judge"})
    enable_drift: bool = field(default=False, metadata={"help": "fire when the newest drift report drifted"})
    enable_satisfaction_trend: bool = field(default=False, metadata={"help": "fire on a falling satisfaction trend"})
    trend_days: int = field(default=30, metadata={"help": "days of the satisfaction trend"})
    cooldown_hours: float = field(default=24.0, metadata={"help": "no automatic cycle this soon after the last"})

    def __post_init__(self) -> None:
        if self.min_new_samples < 1:
            raise ConfigError(f"trigger_config.min_new_samples must be >= 1, got {self.min_new_samples}")
        for name in ("min_quality_score", "quality_drop_threshold", "error_rate_threshold"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"trigger_config.{name} must be within [0, 1], got {value}")
        for name in ("schedule_interval_hours", "quality_window_hours", "error_window_hours", "cooldown_hours"):
            if getattr(self, name) < 0:
                raise ConfigError(f"trigger_config.{name} must be >= 0, got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "TriggerConfig":
        data = dict(data or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown trigger_config keys: {', '.join(unknown)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TriggerResult:
    """One trigger's verdict at one check."""

    trigger: str
    fired: bool
    reason: str
    details: dict[str, Any] = field(default_factory=dict)


def last_cycle_start(db: Database) -> float | None:
    return db.scalar(sa.select(sa.func.max(schema.loop_runs.c.started_at)))


def _quality_condition(min_quality: float):
    i = schema.interactions
    return sa.or_(i.c.quality_score >= min_quality, sa.and_(i.c.quality_score.is_(None), i.c.reward > 0))


class TriggerChecker:
    """Evaluates every enabled trigger against the store and records each verdict."""

    def __init__(self, db: Database, config: TriggerConfig | None = None) -> None:
        self.db = db
        self.config = config or TriggerConfig()

    # 1. each check reads the store and returns a TriggerResult
    def sample_count(self, t: float, since: float | None) -> TriggerResult:
        i = schema.interactions
        stmt = sa.select(sa.func.count()).select_from(i).where(i.c.kind == "chat", _quality_condition(self.config.min_quality_score))
        if since is not None:
            stmt = stmt.where(i.c.ts > since)
        n = int(self.db.scalar(stmt) or 0)
        need = self.config.min_new_samples
        fired = n >= need
        return TriggerResult("sample_count", fired, f"{n} new quality samples {'>=' if fired else '<'} {need}",
                             {"new_samples": n, "min_new_samples": need})

    def scheduled(self, t: float, since: float | None) -> TriggerResult:
        interval = self.config.schedule_interval_hours * HOUR
        if since is None:
            return TriggerResult("scheduled", True, "no cycle has run yet", {"interval_hours": self.config.schedule_interval_hours})
        age = t - since
        return TriggerResult("scheduled", age >= interval, f"{age / HOUR:.1f} h since the last cycle (interval {self.config.schedule_interval_hours} h)",
                             {"hours_since_last": age / HOUR})

    def _mean_quality(self, start: float, end: float) -> tuple[float | None, int]:
        i = schema.interactions
        value = sa.func.coalesce(i.c.quality_score, sa.case((i.c.reward > 0, 1.0), (i.c.reward.is_not(None), 0.0)))
        row = self.db.fetch_one(sa.select(sa.func.avg(value).label("m"), sa.func.count(value).label("n"))
                                .where(i.c.ts > start, i.c.ts <= end, i.c.kind == "chat"))
        return (float(row["m"]) if row["m"] is not None else None), int(row["n"])

    def quality_drop(self, t: float, since: float | None) -> TriggerResult:
        w = self.config.quality_window_hours * HOUR
        cur, n_cur = self._mean_quality(t - w, t)
        prev, n_prev = self._mean_quality(t - 2 * w, t - w)
        details = {"current": cur, "previous": prev, "n_current": n_cur, "n_previous": n_prev}
        if cur is None or prev is None or prev <= 0 or min(n_cur, n_prev) < self.config.min_feedback_for_rates:
            return TriggerResult("quality_drop", False, "not enough scored interactions in both windows", details)
        drop = (prev - cur) / prev
        details["relative_drop"] = drop
        fired = drop > self.config.quality_drop_threshold
        return TriggerResult("quality_drop", fired, f"quality {prev:.3f} -> {cur:.3f} ({drop:+.1%} drop, threshold {self.config.quality_drop_threshold:.0%})", details)

    def error_rate(self, t: float, since: float | None) -> TriggerResult:
        f = schema.feedback
        w = self.config.error_window_hours * HOUR
        negative = sa.case((sa.or_(sa.and_(f.c.kind == "thumbs", f.c.value < 0), sa.and_(f.c.kind == "rating", f.c.value <= 2),
                                   f.c.kind == "report"), 1), else_=0)
        row = self.db.fetch_one(sa.select(sa.func.sum(negative).label("neg"), sa.func.count().label("n"))
                                .where(f.c.ts > t - w, f.c.kind.in_(["thumbs", "rating", "report"])))
        n, neg = int(row["n"] or 0), int(row["neg"] or 0)
        if n < self.config.min_feedback_for_rates:
            return TriggerResult("error_rate", False, f"only {n} explicit feedback in the window", {"n": n})
        rate = neg / n
        fired = rate > self.config.error_rate_threshold
        return TriggerResult("error_rate", fired, f"negative feedback rate {rate:.1%} (threshold {self.config.error_rate_threshold:.0%})",
                             {"n": n, "negative": neg, "rate": rate})

    def drift(self, t: float, since: float | None) -> TriggerResult:
        d = schema.drift_reports
        row = self.db.fetch_one(sa.select(d).where(d.c.kind == "embedding").order_by(d.c.created_at.desc()).limit(1))
        if row is None or (since is not None and row["created_at"] <= since):
            return TriggerResult("drift", False, "no new drift report since the last cycle", {})
        return TriggerResult("drift", bool(row["drifted"]), f"drift report {row['id']}: drifted={bool(row['drifted'])}",
                             {"report_id": row["id"]})

    def satisfaction_trend(self, t: float, since: float | None) -> TriggerResult:
        from tuneloop.loop._trend import satisfaction_slope

        result = satisfaction_slope(self.db, t, self.config.trend_days)
        if result is None:
            return TriggerResult("satisfaction_trend", False, "fewer than 3 days with feedback", {})
        slope, p = result
        fired = slope < 0 and p < 0.05
        return TriggerResult("satisfaction_trend", fired, f"daily satisfaction slope {slope:+.4f}/day (p={p:.3g})", {"slope": slope, "p_value": p})

    # 2. the whole check: cooldown first, then each enabled trigger, every verdict recorded
    def check(self, t: float | None = None, *, record: bool = True) -> list[TriggerResult]:
        t = now() if t is None else t
        since = last_cycle_start(self.db)
        cfg = self.config
        if since is not None and t - since < cfg.cooldown_hours * HOUR:
            results = [TriggerResult("cooldown", False, f"cooldown: {(t - since) / HOUR:.2f} h since the last cycle < {cfg.cooldown_hours} h",
                                     {"hours_since_last": (t - since) / HOUR})]
        else:
            checks = [(cfg.enable_sample_count, self.sample_count), (cfg.enable_scheduled, self.scheduled),
                      (cfg.enable_quality_drop, self.quality_drop), (cfg.enable_error_rate, self.error_rate),
                      (cfg.enable_drift, self.drift), (cfg.enable_satisfaction_trend, self.satisfaction_trend)]
            results = [fn(t, since) for enabled, fn in checks if enabled]
        if record:
            self.record(results, t)
        return results

    def record(self, results: list[TriggerResult], t: float | None = None) -> list[str]:
        t = now() if t is None else t
        rows = [{"id": new_id(), "trigger": r.trigger, "fired": r.fired, "reason": r.reason, "details": r.details, "ts": t} for r in results]
        if rows:
            with self.db.begin() as conn:
                conn.execute(schema.trigger_events.insert(), rows)
        return [r["id"] for r in rows]

    def manual(self, reason: str = "manual trigger") -> str:
        return self.record([TriggerResult("manual", True, reason, {})])[0]
