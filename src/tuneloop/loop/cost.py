"""Cost vs quality (seed 000): what each cycle cost, and the quality change it bought.

Seed 000: "every update: annotation cost, compute (eval, re-train), deploy risk -> the quality
gain must justify the cost". Per cycle this records, in ``loop_runs.details["cost"]``:

1. compute seconds per stage (the cycle's own ``details["timings"]``), priced at
   ``cpu_hour``, or ``gpu_hour`` for the train and gate stages when training ran on a GPU;
2. judge tokens: LLM-as-judge grades (feedback ``source=judge``) and judge preferences
   (annotations by ``judge:<name>``) of the interactions the cycle's datasets used, priced
   per 1k tokens (judgements stored before tokens were recorded count as unmetered calls);
3. shadow tokens: the challenger's ``arm=shadow`` answers, priced per 1k tokens;
4. human annotations (done, not by a judge) of the interactions in the cycle's datasets;
5. the quality change: the experiment's lift of its primary metric (treatment minus
   control; rates in percentage points), else the gate's pass-rate delta (points). A cycle
   *buys* that change only if it promoted; a rejected or rolled-back cycle bought 0.

``cost per point`` = money / points bought. The ``skip_finetune_below`` rule holds new
fine-tuning (adapter or model) cycles while the last ``last_n`` of them bought on average fewer than
``min_points``; it lets go when the oldest of them leaves the ``lookback_days`` window.

>>> cfg = CostConfig.from_dict({"cpu_hour": 0.5, "gpu_hour": 2.5, "skip_finetune_below": 1.0})
>>> price(CycleUsage(stage_seconds={"train": 3600.0, "gate": 360.0}, device="gpu"), cfg)["total"]
2.75
>>> cfg.skip_finetune_below.last_n
3
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa

from tuneloop.errors import ConfigError
from tuneloop.loop.policy import FINETUNE_LEVERS, HOUR, Hold, iso
from tuneloop.store import Database, schema

FINAL = ("promoted", "rolled_back", "rejected", "failed", "completed")
GPU_STAGES = ("train", "gate")


@dataclass
class SkipFinetuneRule:
    """Skip fine-tuning while recent fine-tuning cycles bought less than ``min_points`` each."""

    min_points: float = field(metadata={"help": "quality points a fine-tuning cycle must buy on average"})
    last_n: int = field(default=3, metadata={"help": "how many recent fine-tuning cycles to average"})
    lookback_days: float = field(default=30.0, metadata={"help": "cycles older than this no longer count"})

    def __post_init__(self) -> None:
        if self.last_n < 1:
            raise ConfigError(f"cost_config.skip_finetune_below.last_n must be >= 1, got {self.last_n}")
        if self.lookback_days <= 0:
            raise ConfigError(f"cost_config.skip_finetune_below.lookback_days must be > 0, got {self.lookback_days}")


@dataclass
class CostConfig:
    """Prices of the resources a cycle uses (all 0 by default: costs then show resources only)."""

    currency: str = field(default="USD", metadata={"help": "label of every price"})
    cpu_hour: float = field(default=0.0, metadata={"help": "price of one hour of a stage on CPU"})
    gpu_hour: float = field(default=0.0, metadata={"help": "price of one hour of train/gate on a GPU"})
    per_1k_judge_tokens: float = field(default=0.0, metadata={"help": "price of 1000 judge tokens (prompt + completion)"})
    per_1k_shadow_tokens: float = field(default=0.0, metadata={"help": "price of 1000 shadow tokens (prompt + completion)"})
    per_annotation: float = field(default=0.0, metadata={"help": "price of one human annotation"})
    skip_finetune_below: SkipFinetuneRule | None = field(default=None, metadata={
        "help": "min_points (or {min_points, last_n, lookback_days}): skip fine-tuning when recent cycles bought less"})

    def __post_init__(self) -> None:
        for name in ("cpu_hour", "gpu_hour", "per_1k_judge_tokens", "per_1k_shadow_tokens", "per_annotation"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"cost_config.{name} must be a number >= 0, got {value!r}")
            setattr(self, name, float(value))
        rule = self.skip_finetune_below
        if isinstance(rule, (int, float)) and not isinstance(rule, bool):
            self.skip_finetune_below = SkipFinetuneRule(float(rule))
        elif isinstance(rule, Mapping):
            unknown = sorted(set(rule) - set(SkipFinetuneRule.__dataclass_fields__))
            if unknown or "min_points" not in rule:
                raise ConfigError(f"cost_config.skip_finetune_below: use a number or {{min_points, last_n, "
                                  f"lookback_days}}, got keys {sorted(rule)}")
            self.skip_finetune_below = SkipFinetuneRule(**rule)
        elif rule is not None and not isinstance(rule, SkipFinetuneRule):
            raise ConfigError(f"cost_config.skip_finetune_below: expected a number or a mapping, got {rule!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "CostConfig":
        data = dict(data or {})
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"unknown cost_config keys: {', '.join(unknown)}; known: {', '.join(cls.__dataclass_fields__)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CycleUsage:
    """The resources one cycle used (what :func:`measure_usage` reads from the store)."""

    stage_seconds: dict[str, float] = field(default_factory=dict)
    device: str = "cpu"                 # where training ran: cpu | gpu
    judge_calls: int = 0
    judge_tokens: int = 0
    judge_calls_unmetered: int = 0      # judgements stored without a token count
    shadow_requests: int = 0
    shadow_tokens: int = 0              # prompt + completion
    shadow_generated_tokens: int = 0    # completion only
    annotations: int = 0


@dataclass(frozen=True)
class QualityChange:
    """The quality change a cycle measured, and what it bought (``points`` if it shipped, else 0)."""

    points: float | None
    source: str | None      # experiment:<metric> | gate:pass_rate | None
    unit: str | None        # pp (percentage points) | <metric> units
    shipped: bool

    @property
    def bought(self) -> float:
        return (self.points or 0.0) if self.shipped else 0.0


# --------------------------------------------------------------------------- pure pricing
def price(usage: CycleUsage, config: CostConfig) -> dict[str, float]:
    """Money per resource and in total (rounded to 1e-6)."""
    compute = 0.0
    for stage, seconds in usage.stage_seconds.items():
        rate = config.gpu_hour if usage.device == "gpu" and stage in GPU_STAGES else config.cpu_hour
        compute += seconds / HOUR * rate
    parts = {"compute": compute, "judge": usage.judge_tokens / 1000 * config.per_1k_judge_tokens,
             "shadow": usage.shadow_tokens / 1000 * config.per_1k_shadow_tokens,
             "annotation": usage.annotations * config.per_annotation}
    parts["total"] = sum(parts.values())
    return {k: round(v, 6) for k, v in parts.items()}


def quality_change(run: Mapping[str, Any], experiment: Mapping[str, Any] | None) -> QualityChange:
    """The experiment's lift of its primary metric, else the gate's pass-rate delta."""
    from tuneloop.experiments.config import METRICS

    shipped = run.get("state") == "promoted"
    decision = (experiment or {}).get("decision") or {}
    metric, arms = decision.get("primary_metric"), decision.get("metrics") or {}
    if metric and "control" in arms:
        treated = next((v for k, v in arms.items() if k != "control"), None) or {}
        c, t = arms["control"].get(metric), treated.get(metric)
        if c is not None and t is not None:
            binary = METRICS.get(metric, ("continuous",))[0] == "binary"
            return QualityChange(round((t - c) * (100 if binary else 1), 4), f"experiment:{metric}",
                                 "pp" if binary else metric, shipped)
    gate = ((run.get("details") or {}).get("gate")) or {}
    if gate.get("pass_rate") is not None and gate.get("champion_pass_rate") is not None:
        return QualityChange(round((gate["pass_rate"] - gate["champion_pass_rate"]) * 100, 4), "gate:pass_rate", "pp", shipped)
    return QualityChange(None, None, None, shipped)


# --------------------------------------------------------------------------- reading the store
def _dataset_ids(run: Mapping[str, Any]) -> list[str]:
    datasets = ((run.get("details") or {}).get("datasets")) or {}
    ids = {v.get("id") for v in datasets.values() if isinstance(v, Mapping)} | {run.get("dataset_id")}
    return sorted(i for i in ids if i)


def _device(run: Mapping[str, Any]) -> str:
    train = ((run.get("details") or {}).get("train")) or {}
    device = (train.get("metrics") or {}).get("device") or (train.get("config") or {}).get("device") or "cpu"
    return "gpu" if str(device).startswith("cuda") or device == "gpu" else "cpu"


def _tokens(meta: Any) -> int | None:
    usage = (meta or {}).get("usage") if isinstance(meta, Mapping) else None
    if isinstance(usage, Mapping):
        return int(usage.get("prompt_tokens") or 0) + int(usage.get("completion_tokens") or 0)
    return None


def measure_usage(db: Database, run: Mapping[str, Any]) -> CycleUsage:
    """What the cycle used, from what the store holds about it."""
    f, a, m, i = schema.feedback, schema.annotations, schema.dataset_members, schema.interactions
    ids = _dataset_ids(run)
    members = sa.select(m.c.interaction_id).where(m.c.dataset_id.in_(ids)).distinct().scalar_subquery() if ids else None
    judge_calls = judge_tokens = unmetered = annotations = 0
    if members is not None:
        judged = [r["meta"] for r in db.iter_rows(sa.select(f.c.meta).where(f.c.source == "judge", f.c.interaction_id.in_(members)))]
        judged += [r["meta"] for r in db.iter_rows(sa.select(a.c.meta).where(
            a.c.annotator.like("judge:%"), a.c.status == "done", a.c.interaction_id.in_(members)))]
        counted = [_tokens(meta) for meta in judged]
        judge_calls, judge_tokens = len(counted), sum(t for t in counted if t is not None)
        unmetered = sum(1 for t in counted if t is None)
        annotations = int(db.scalar(sa.select(sa.func.count()).select_from(a).where(
            a.c.status == "done", sa.or_(a.c.annotator.is_(None), sa.not_(a.c.annotator.like("judge:%"))),
            a.c.interaction_id.in_(members))) or 0)
    shadow = {"n": 0, "p": 0, "c": 0}
    if run.get("version_id"):
        row = db.fetch_one(sa.select(sa.func.count().label("n"), sa.func.sum(i.c.prompt_tokens).label("p"),
                                     sa.func.sum(i.c.completion_tokens).label("c"))
                           .where(i.c.arm == "shadow", i.c.version_id == run["version_id"]))
        shadow = {k: int((row or {}).get(k) or 0) for k in ("n", "p", "c")}
    timings = ((run.get("details") or {}).get("timings")) or {}
    return CycleUsage(stage_seconds={k: float(v) for k, v in timings.items()}, device=_device(run),
                      judge_calls=judge_calls, judge_tokens=judge_tokens, judge_calls_unmetered=unmetered,
                      shadow_requests=shadow["n"], shadow_tokens=shadow["p"] + shadow["c"],
                      shadow_generated_tokens=shadow["c"], annotations=annotations)


def _experiment(db: Database, run: Mapping[str, Any]) -> dict | None:
    if not run.get("experiment_id"):
        return None
    e = schema.experiments
    return db.fetch_one(sa.select(e).where(e.c.id == run["experiment_id"]))


def cycle_cost(db: Database, run: Mapping[str, Any], config: CostConfig | None = None) -> dict[str, Any]:
    """The cost record of one cycle (what ``details["cost"]`` holds)."""
    config = config or CostConfig()
    usage = measure_usage(db, run)
    money = price(usage, config)
    q = quality_change(run, _experiment(db, run))
    bought = q.bought
    return {"currency": config.currency, "money": money, "usage": asdict(usage),
            "compute_seconds": round(sum(usage.stage_seconds.values()), 3),
            "lever": ((run.get("details") or {}).get("lever")) or "adapter",
            "quality": {"points": q.points, "source": q.source, "unit": q.unit, "shipped": q.shipped, "bought": bought},
            "cost_per_point": round(money["total"] / bought, 6) if bought > 0 else None,
            "prices": {k: v for k, v in config.to_dict().items() if k != "skip_finetune_below"}}


def record_costs(db: Database, config: CostConfig | None = None, *, recent: int = 20) -> list[str]:
    """Store ``details["cost"]`` on the recent finished cycles that have none; returns their ids."""
    lr = schema.loop_runs
    done = []
    for run in db.fetch_all(sa.select(lr).where(lr.c.state.in_(FINAL)).order_by(lr.c.started_at.desc()).limit(recent)):
        details = dict(run["details"] or {})
        if "cost" in details:
            continue
        details["cost"] = cycle_cost(db, run, config)
        with db.begin() as conn:  # final runs change no more: no other writer races this one
            conn.execute(lr.update().where(lr.c.id == run["id"]).values(details=details))
        done.append(run["id"])
    return done


@dataclass(frozen=True)
class CostReport:
    """Per cycle: cost, quality change and cost per point; totals over the cycles shown."""

    cycles: list[dict[str, Any]]
    currency: str
    total_money: float
    total_points: float
    cost_per_point: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cost_report(db: Database, config: CostConfig | None = None, *, limit: int = 50) -> CostReport:
    """Newest first. Stored costs are shown as priced then; cycles without one are priced now."""
    lr = schema.loop_runs
    rows = []
    for run in db.fetch_all(sa.select(lr).order_by(lr.c.started_at.desc()).limit(limit)):
        cost = (run["details"] or {}).get("cost") or cycle_cost(db, run, config)
        q = cost["quality"]
        rows.append({"id": run["id"], "state": run["state"], "decision": run["decision"], "version_id": run["version_id"],
                     "started_at": run["started_at"], "lever": cost.get("lever"), "compute_seconds": cost["compute_seconds"],
                     "judge_tokens": cost["usage"]["judge_tokens"], "shadow_tokens": cost["usage"]["shadow_tokens"],
                     "annotations": cost["usage"]["annotations"], "money": cost["money"]["total"],
                     "currency": cost["currency"], "points": q["points"], "quality_source": q["source"],
                     "bought": q["bought"], "cost_per_point": cost["cost_per_point"],
                     "final": run["state"] in FINAL})
    money = round(sum(r["money"] for r in rows), 6)
    points = round(sum(r["bought"] for r in rows), 4)
    currency = (config or CostConfig()).currency if not rows else rows[0]["currency"]
    return CostReport(rows, currency, money, points, round(money / points, 6) if points > 0 else None)


def skip_finetune_hold(db: Database, config: CostConfig, t: float) -> Hold | None:
    """The ``skip_finetune_below`` rule: hold a fine-tuning cycle when recent ones bought too little."""
    rule = config.skip_finetune_below
    if rule is None:
        return None
    lr = schema.loop_runs
    since = t - rule.lookback_days * 86400.0
    rows = db.fetch_all(sa.select(lr).where(lr.c.state.in_(("promoted", "rolled_back", "rejected")),
                                            lr.c.train_run_id.is_not(None), lr.c.ended_at >= since)
                        .order_by(lr.c.ended_at.desc()).limit(rule.last_n * 5))
    tuned = [r for r in rows if ((r["details"] or {}).get("lever") or "adapter") in FINETUNE_LEVERS][:rule.last_n]
    if len(tuned) < rule.last_n:
        return None
    bought = [((r["details"] or {}).get("cost") or cycle_cost(db, r, config))["quality"]["bought"] for r in tuned]
    mean = sum(bought) / len(bought)
    if mean >= rule.min_points:
        return None
    until = min(r["ended_at"] for r in tuned) + rule.lookback_days * 86400.0
    return Hold("skip_finetune_below", f"skip_finetune_below: the last {len(tuned)} fine-tuning cycles bought "
                f"{mean:.2f} points on average < {rule.min_points:g}; fine-tuning resumes by {iso(until)}", until,
                {"lever": "adapter", "mean_points": round(mean, 4), "min_points": rule.min_points,
                 "cycles": [r["id"] for r in tuned]})
