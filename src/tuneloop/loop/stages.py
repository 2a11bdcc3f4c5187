"""The real work of each cycle transition, composed from the domain packages.

Each stage first looks for what it would produce for this run, so repeating a stage after a
crash finds the finished work instead of redoing it:
- datasets: ``<output_dir>/<run id>/<kind>.jsonl`` with its ``datasets`` row;
- training: the ``train_runs`` row whose config names this loop run;
- the version: its id is derived from the run (``v<cycle number>``);
- the gate: the ``eval_runs`` row of that version;
- the experiment: the running or finished experiment whose treatment is that version.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import sqlalchemy as sa

from tuneloop.errors import DatasetError
from tuneloop.loop.config import LoopConfig
from tuneloop.loop.cycle import StepResult
from tuneloop.store import Database, schema

log = logging.getLogger("tuneloop.loop")


def build_sft_dataset(db: Database, generator_config: Any, out_dir: Path, kind: str = "sft"):
    """Build (or find, if this exact file was already built) one dataset snapshot."""
    from tuneloop.datasets.generator import DataGeneratorConfig, TrainingDataGenerator

    if generator_config is None:
        cfg = DataGeneratorConfig(kind=kind)
    elif isinstance(generator_config, DataGeneratorConfig):
        cfg = generator_config
    else:
        cfg = DataGeneratorConfig(**{**dict(generator_config), "kind": kind})
    out_dir.mkdir(parents=True, exist_ok=True)
    return TrainingDataGenerator(db, cfg).generate(out_dir / f"{kind}.jsonl")


def _existing_dataset(db: Database, path: Path) -> dict | None:
    d = schema.datasets
    return db.fetch_one(sa.select(d).where(d.c.path == str(path)).order_by(d.c.created_at.desc()).limit(1))


class DefaultStages:
    """Datasets -> TRL LoRA training -> registry -> golden gate -> online experiment."""

    min_train_rows = 8

    def __init__(self, db: Database, config: LoopConfig, *, train_fn: Callable[[str], dict] | None = None,
                 on_change: Callable[[], None] | None = None, pool: Any = None) -> None:
        self.db, self.config, self.train_fn = db, config, train_fn
        self.pool = pool  # the model pool the gate evaluates with (None: one shared per data dir)
        self.on_change = on_change  # e.g. the gateway router's invalidate()

    def _out(self, run: dict) -> Path:
        return Path(self.config.output_dir) / run["id"]

    def cycle_number(self, run: dict) -> int:
        lr = schema.loop_runs
        return int(self.db.scalar(sa.select(sa.func.count()).select_from(lr).where(lr.c.started_at <= run["started_at"])) or 1)

    # 0. the lever: a new prompt or a fine-tuned adapter (loop/levers.py)
    def planned_lever(self) -> str:
        """The lever the next cycle would pull (the update-rate policy asks before starting it)."""
        from tuneloop.loop.prompting import plan_lever

        return plan_lever(self.db, self.config).lever

    def _lever(self, run: dict) -> dict[str, str]:
        known = (run["details"] or {}).get("lever")
        if known:
            return {"lever": known, "lever_reason": (run["details"] or {}).get("lever_reason", "")}
        from tuneloop.loop.prompting import plan_lever

        choice = plan_lever(self.db, self.config, before=run["started_at"])
        log.info("cycle %s pulls the %s lever (%s)", run["id"], choice.lever, choice.reason)
        return {"lever": choice.lever, "lever_reason": choice.reason}

    # 1. datasets (the prompt lever: the champion's failure cases)
    def build_dataset(self, run: dict) -> StepResult:
        lever = self._lever(run)
        if lever["lever"] == "prompt":
            from tuneloop.loop.prompting import build_failures

            info = build_failures(self.db, self.config, self._out(run))
            return StepResult("dataset_built", {"dataset_id": info["id"]}, {**lever, "datasets": {"failures": info}})
        details: dict[str, Any] = {"datasets": {}, **lever}
        primary = None
        for kind in self.config.dataset_kinds:
            path = self._out(run) / f"{kind}.jsonl"
            found = _existing_dataset(self.db, path)
            if found is not None:
                info = {"id": found["id"], "path": str(path), "rows": found["row_count"], "counts": found["counts"]}
            else:
                result = build_sft_dataset(self.db, self.config.generator_config, self._out(run), kind)
                info = {"id": result.dataset_id, "path": result.path, "rows": result.final_count,
                        "counts": result.counts, "dropped": result.dropped, "pii": result.pii_counts}
            details["datasets"][kind] = info
            primary = primary or info
        if primary is None or primary["rows"] < self.min_train_rows:
            n = 0 if primary is None else primary["rows"]
            # loop_runs.decision holds a short code (32 characters); the numbers go to the details
            return StepResult("rejected", {"dataset_id": primary and primary["id"]},
                              {**details, "rejection": f"not enough training data ({n} rows < {self.min_train_rows})"},
                              decision="not enough training data")
        return StepResult("dataset_built", {"dataset_id": primary["id"]}, details)

    # 2. training (the prompt lever: the prompt trainer, no LoRA)
    def train(self, run: dict) -> StepResult:
        if (run["details"] or {}).get("lever") == "prompt":
            from tuneloop.loop.prompting import no_improvement, train_prompt_candidate

            out = train_prompt_candidate(self.db, self.config, run, self._out(run), self.pool)
            why = no_improvement(out)
            if why is not None:  # nothing worth an A/B test: end the cycle here, cheaply. No candidate was
                # made, so the run's train_run_id stays empty (total_retrains counts cycles that made one);
                # the prompt run is in details["train"].
                return StepResult("rejected", {}, {"train": out, "rejection": why}, decision="no better prompt")
            return StepResult("trained", {"train_run_id": out["train_run_id"]}, {"train": out})
        from tuneloop.loop.training import train_candidate

        out = train_candidate(self.db, self.config, run, self._out(run), train_fn=self.train_fn)
        return StepResult("trained", {"train_run_id": out["train_run_id"]}, {"train": out})

    # 3. registry
    def register(self, run: dict) -> StepResult:
        from tuneloop.registry.versions import Registry

        registry = Registry(self.db, actor="loop")
        vid = f"v{self.cycle_number(run)}"
        if registry.find(vid) is None and (run["details"] or {}).get("lever") == "prompt":
            from tuneloop.loop.prompting import register_prompt_version

            register_prompt_version(self.db, run, vid)
        elif registry.find(vid) is None:
            champion = registry.champion()
            train = (run["details"] or {}).get("train", {})
            datasets = (run["details"] or {}).get("datasets", {})
            registry.register(
                vid, backend=champion.backend if champion else "local",
                base_model=train.get("base_model") or (champion.base_model if champion else self.config.base_model),
                adapter_path=train.get("adapter_path"), model_path=train.get("model_path"),
                prompt=champion.prompt if champion else None, params=champion.params if champion else None,
                parent_id=champion.id if champion else None, dataset_id=run["dataset_id"],
                train_run_id=run["train_run_id"], metrics=train.get("metrics"),
                lineage={"lever": "adapter", "loop_run_id": run["id"], "datasets": {k: {"id": v["id"], "rows": v["rows"]} for k, v in datasets.items()},
                         "train_config": train.get("config"), "parent": champion.id if champion else None})
        return StepResult("registered", {"version_id": vid})

    # 4. offline gate on the golden set
    def gate(self, run: dict) -> StepResult:
        from tuneloop.loop.gating import gate_candidate

        outcome = gate_candidate(self.db, self.config, run["version_id"], self.pool)
        if not outcome["passed"]:
            from tuneloop.registry.versions import Registry

            Registry(self.db, actor="loop").reject(run["version_id"], "; ".join(outcome["reasons"]))
            return StepResult("rejected", {"eval_run_id": outcome["eval_run_id"]}, {"gate": outcome}, decision="rejected by gate")
        return StepResult("gated", {"eval_run_id": outcome["eval_run_id"]}, {"gate": outcome})

    # 5. online: A/B (or straight promotion when A/B testing is off)
    def _manager(self):
        from tuneloop.experiments.manager import ABTestManager

        return ABTestManager(self.db, self.config.ab_test_config or None, actor="loop")

    def start_experiment(self, run: dict) -> StepResult:
        vid = run["version_id"]
        if self.config.require_approval:
            approval = (run["details"] or {}).get("approval")
            if approval is None:  # no traffic reaches the challenger before an admin decides
                if run["state"] == "awaiting_approval":
                    return None  # type: ignore[return-value]
                return StepResult("awaiting_approval", {}, {})
            if approval["decision"] != "approved":
                from tuneloop.registry.versions import Registry

                Registry(self.db, actor=approval["by"]).reject(vid, f"rejected by {approval['by']}: {approval['reason']}")
                return StepResult("rejected", {}, {}, decision="rejected by approver")
        from tuneloop.loop.holds import experiment_hold

        if experiment_hold(self.db, self.config, run) is not None:
            return None  # type: ignore[return-value]  # held by the update-rate policy (recorded); retried next check
        if not self.config.enable_ab_testing:
            if not self.config.enable_auto_promotion:
                return StepResult("completed", {}, {"note": "A/B testing and auto promotion are off"}, decision="awaiting manual promotion")
            from tuneloop.registry.versions import Registry

            Registry(self.db, actor="loop").promote(vid, reason="gate passed; A/B testing disabled")
            self._changed()
            return StepResult("promoted", {}, {}, decision="promoted (no A/B)")
        exp = self._experiment_of(vid)
        if exp is None:
            exp_id = self._manager().deploy_challenger(vid).id
        else:
            exp_id = exp["id"]
        self._changed()
        return StepResult("experimenting", {"experiment_id": exp_id})

    def _experiment_of(self, vid: str) -> dict | None:
        e = schema.experiments
        return self.db.fetch_one(sa.select(e).where(e.c.treatment_id == vid).order_by(e.c.started_at.desc()).limit(1))

    def decide(self, run: dict) -> StepResult | None:
        exp = self._experiment_of(run["version_id"])
        if exp is None:
            raise DatasetError(f"experiment of {run['version_id']} disappeared")
        if exp["status"] == "running":
            from tuneloop.loop.holds import auto_promote_unless_held

            auto_promote_unless_held(self.db, self.config, run, self._manager())  # the policy may hold a promotion
            exp = self._experiment_of(run["version_id"])
        if exp["status"] == "running":
            return None
        self._changed()
        decision = exp["decision"] or {}
        summary = {k: decision.get(k) for k in ("decision", "reason", "improvement", "p_value", "ci", "samples", "winner") if k in decision}
        state = {"promoted": "promoted", "rolled_back": "rolled_back"}.get(exp["status"], "rejected")
        return StepResult(state, {}, {"experiment": summary}, decision=exp["status"])

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()
