"""Scripted versions (no model) in a real store, for the update-policy, cost and notification tests."""
from __future__ import annotations

import sys
from pathlib import Path

import sqlalchemy as sa

from tuneloop.ids import now
from tuneloop.loop.config import LoopConfig
from tuneloop.loop.cycle import CycleRunner, StepResult
from tuneloop.loop.stages import DefaultStages
from tuneloop.registry.versions import Registry
from tuneloop.store import schema

sys.path.insert(0, str(Path(__file__).parent))
import loop_support  # noqa: E402

AB = {"initial_challenger_traffic": 0.5, "min_duration_hours": 0, "min_samples_per_version": 30,
      "primary_metric": "positive_feedback_rate", "min_improvement_threshold": 0.0, "sequential_tuning_samples": 200}


def champion(db, vid: str = "v0") -> None:
    reg = Registry(db)
    reg.register(vid, backend="scripted", params={"script": {"default": "a"}})
    reg.promote(vid)


def config(db, tmp_path, **over) -> LoopConfig:
    return LoopConfig(db_url=str(db.engine.url), output_dir=str(tmp_path), ab_test_config=dict(AB), **over)


def gated_run(db, cfg: LoopConfig, vid: str = "v1", lever: str = "adapter") -> tuple[CycleRunner, str]:
    """A cycle whose scripted candidate ``vid`` passed the gate: the next step puts it online."""
    Registry(db).register(vid, backend="scripted", adapter_path=f"/adapters/{vid}", params={"script": {"default": "b"}})
    runner = CycleRunner(db, DefaultStages(db, cfg))
    run_id = runner.start(None, "test")
    lr = schema.loop_runs
    run = runner.get(run_id)
    details = {**run["details"], "lever": lever, "gate": {"passed": True, "pass_rate": 0.9, "champion_pass_rate": 0.8}}
    with db.begin() as conn:
        conn.execute(lr.update().where(lr.c.id == run_id).values(state="gated", version_id=vid, details=details))
    return runner, run_id


def outcomes(db, better: bool = True) -> bool:
    """Thumbs for both arms of the running experiment: the challenger clearly better (or worse)."""
    return loop_support.synthesize_ab(db, *((0.2, 0.8) if better else (0.8, 0.2)))


def audit(db, action: str) -> list[dict]:
    a = schema.audit_log
    return db.fetch_all(sa.select(a).where(a.c.action == action).order_by(a.c.id))


class ScriptedStages:
    """A cycle without a model: each stage records a result at once; ``lever`` is planned."""

    def __init__(self, db, *, lever: str = "adapter", final: str = "rejected", gate=(0.7, 0.8)) -> None:
        self.db, self.lever, self.final, self.rates = db, lever, final, gate
        self.started = 0

    def planned_lever(self) -> str:
        return self.lever

    def build_dataset(self, run):
        self.started += 1
        return StepResult("dataset_built", {}, {"lever": self.lever})

    def train(self, run):
        return StepResult("trained", {"train_run_id": f"{run['id']}-train1"})

    def register(self, run):
        return StepResult("registered", {"version_id": f"c{self.started}-{now():.0f}"})

    def gate(self, run):
        rate, champ = self.rates
        g = {"passed": self.final != "rejected", "pass_rate": rate, "champion_pass_rate": champ}
        if self.final == "rejected":
            return StepResult("rejected", {}, {"gate": g}, decision="rejected by gate")
        return StepResult("gated", {}, {"gate": g})

    def start_experiment(self, run):
        return StepResult(self.final, {}, {}, decision=self.final)

    def decide(self, run):
        return None
