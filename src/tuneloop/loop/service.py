"""The seed's loop classes: ``ContinuousLearningLoop`` and ``AutoRetrainer``.

>>> loop = ContinuousLearningLoop(LoopConfig(db_path=":memory:"))   # doctest: +SKIP
>>> loop.run_iteration()                                           # doctest: +SKIP
{'action': 'checked', 'fired': [], ...}
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tuneloop.ids import now
from tuneloop.loop.config import LoopConfig
from tuneloop.loop.cycle import FINAL, CycleRunner, CycleStages
from tuneloop.loop.triggers import TriggerChecker, TriggerConfig, TriggerResult, last_cycle_start
from tuneloop.store import Database, schema
from tuneloop.store.lock import LeaderLock

log = logging.getLogger("tuneloop.loop")
TrainFn = Callable[[str], dict]


def _db_of(obj: Any) -> Database:
    if isinstance(obj, Database):
        return obj
    db = getattr(obj, "db", None)
    if isinstance(db, Database):
        return db
    raise TypeError(f"expected a tuneloop Database or an object with a .db (such as UsageLogger), got {type(obj).__name__}")


def pending_manual_trigger(db: Database) -> dict | None:
    """A manual trigger recorded after the last cycle started, not yet acted on."""
    te = schema.trigger_events
    since = last_cycle_start(db) or 0.0
    return db.fetch_one(sa.select(te).where(te.c.trigger == "manual", te.c.fired.is_(True), te.c.ts > since)
                        .order_by(te.c.ts).limit(1))


class ContinuousLearningLoop:
    """Checks triggers, runs cycles to promotion or rollback, and reports its status."""

    def __init__(self, config: LoopConfig | None = None, *, db: Database | None = None,
                 stages: CycleStages | None = None) -> None:
        self.config = config or LoopConfig()
        self.db = db or Database.open(self.config.database_url())
        self.triggers = TriggerChecker(self.db, self.config.trigger_config)
        self._stages = stages
        self._stop = threading.Event()
        self.lock = LeaderLock(self.db)
        self.notifier = None
        if self.config.webhooks:
            from tuneloop.notify.notifier import Notifier

            self.notifier = Notifier(self.db, self.config.webhooks)

    def stages(self, train_fn: TrainFn | None = None) -> CycleStages:
        if self._stages is None or train_fn is not None:
            from tuneloop.loop.stages import DefaultStages

            self._stages = DefaultStages(self.db, self.config, train_fn=train_fn)
        return self._stages

    def planned_lever(self) -> str:
        """The lever the next cycle would change: the stages' ``planned_lever()``, else adapter."""
        plan = getattr(self._stages, "planned_lever", None)
        return str(plan()) if callable(plan) else "adapter"

    # 1. one iteration: resume the open cycle, or check triggers and maybe start one
    def run_iteration(self, train_fn: TrainFn | None = None) -> dict[str, Any]:
        try:
            return self._iteration(train_fn)
        finally:
            self._after_iteration()

    def _after_iteration(self) -> None:
        """Once the iteration's state is persisted: cost of finished cycles, webhooks. Never raises."""
        from tuneloop.loop.cost import record_costs

        try:
            record_costs(self.db, self.config.cost_config)
        except Exception:
            log.exception("recording cycle costs failed")
        if self.notifier is not None:
            self.notifier.sweep()  # logs its own errors; sends on its own thread

    def _start_hold(self, fired: list[TriggerResult], manual: bool) -> dict[str, Any] | None:
        """The update-rate policy and the cost rule, before a cycle starts (loop/holds.py)."""
        from tuneloop.loop.holds import check_start, record_override, record_start_hold

        lever = self.planned_lever()
        hold = check_start(self.db, self.config, lever)
        if hold is None:
            return None
        if manual:  # an operator asked: start anyway, and say (and audit) what was overridden
            record_override(self.db, hold, lever=lever, reason=fired[0].reason)
            return {"override": f"{hold.rule} overridden by a manual trigger ({hold.reason})"}
        event_id = record_start_hold(self.db, hold, lever=lever, triggers=[r.trigger for r in fired])
        return {"action": "held", "rule": hold.rule, "reason": hold.reason, "until": hold.until, "lever": lever,
                "fired": [r.trigger for r in fired], "event_id": event_id}

    def _iteration(self, train_fn: TrainFn | None = None) -> dict[str, Any]:
        runner = CycleRunner(self.db, self.stages(train_fn))
        active = runner.active()
        if active is not None:
            state = runner.advance(active["id"])
            return {"action": "advanced", "run_id": active["id"], "state": state}
        manual = pending_manual_trigger(self.db)
        if manual is not None:
            fired = [TriggerResult("manual", True, manual["reason"] or "manual")]
            event_id = manual["id"]
        else:
            results = self.triggers.check()
            fired = [r for r in results if r.fired]
            if not fired:
                return {"action": "checked", "fired": [], "reasons": [f"{r.trigger}: {r.reason}" for r in results]}
            event_id = self._last_event_id(fired[0].trigger)
        reason = "; ".join(f"{r.trigger}: {r.reason}" for r in fired)
        held = self._start_hold(fired, manual is not None)
        if held is not None and "override" not in held:
            return held
        if held is not None:
            reason += f"; {held['override']}"
        run_id = runner.start(event_id, reason)
        log.info("cycle %s started (%s)", run_id, reason)
        state = runner.advance(run_id)
        return {"action": "started", "run_id": run_id, "state": state, "fired": [r.trigger for r in fired], "reason": reason}

    def _last_event_id(self, trigger: str) -> str | None:
        te = schema.trigger_events
        return self.db.scalar(sa.select(te.c.id).where(te.c.trigger == trigger, te.c.fired.is_(True)).order_by(te.c.ts.desc()).limit(1))

    # 2. the daemon: hold the leader lock, iterate, sleep; stop() ends it between steps
    def run_loop(self, train_fn: TrainFn | None = None, *, max_iterations: int | None = None,
                 on_iteration: Callable[[dict], None] | None = None) -> None:
        self.lock.acquire()
        try:
            n = 0
            while not self._stop.is_set():
                try:
                    result = self.run_iteration(train_fn)
                    if self.config.retention_days:
                        from tuneloop.privacy.retention import enforce_retention

                        enforce_retention(self.db, self.config.retention_days, actor="loop", max_batches=50)
                except Exception:  # one bad iteration must not kill the daemon
                    log.exception("loop iteration failed")
                    result = {"action": "error"}
                if on_iteration:
                    on_iteration(result)
                n += 1
                if max_iterations is not None and n >= max_iterations:
                    break
                if self.config.max_cycles is not None and self.total_retrains() >= self.config.max_cycles and result.get("state") in FINAL:
                    break
                self._stop.wait(self.config.check_interval_seconds)
        finally:
            if self.notifier is not None:
                self.notifier.close()  # bounded wait; what is left stays pending for the next start
            self.lock.release()

    def stop(self) -> None:
        self._stop.set()

    def trigger(self, reason: str = "manual trigger") -> str:
        """Record a manual trigger; the next iteration starts a cycle."""
        return self.triggers.manual(reason)

    # 3. status
    def total_retrains(self) -> int:
        lr = schema.loop_runs
        return int(self.db.scalar(sa.select(sa.func.count()).select_from(lr).where(lr.c.train_run_id.is_not(None))) or 0)

    def get_status_summary(self, recent: int = 10) -> dict[str, Any]:
        from tuneloop.loop.levers import lever_status
        from tuneloop.loop.status import extra_status, run_row

        lr, al = schema.loop_runs, schema.aliases
        runs = self.db.fetch_all(sa.select(lr).order_by(lr.c.started_at.desc()).limit(recent))
        champion = self.db.scalar(sa.select(al.c.version_id).where(al.c.name == "champion"))
        challenger = self.db.scalar(sa.select(al.c.version_id).where(al.c.name == "challenger"))
        last_trained = next((r for r in runs if r["train_run_id"]), None)
        last_decided = next((r for r in runs if r["decision"]), None)
        active = next((r for r in runs if r["state"] not in FINAL), None)
        te = schema.trigger_events
        triggers = self.db.fetch_all(sa.select(te).order_by(te.c.ts.desc()).limit(recent))
        return {
            "status": {
                "total_retrains": self.total_retrains(),
                "last_retrain": last_trained["started_at"] if last_trained else None,
                "champion_model": champion,
                "challenger_model": challenger,
                "current_stage": active["state"] if active else "idle",
                "active_run": active["id"] if active else None,
                "last_decision": last_decided["decision"] if last_decided else None,
            },
            "recent_runs": [run_row(r) for r in runs],
            "recent_triggers": [{k: t[k] for k in ("trigger", "fired", "reason", "ts")} for t in triggers],
            **extra_status(self.db, self.config),  # policy holds, cost per point, webhook deliveries
            "levers": lever_status(self.db, self.config),  # next lever and why; which lever won, by how much
        }


class AutoRetrainer:
    """Seed 002's retrainer: when a trigger fires, build training data and call ``train_fn``.

    It does not gate or test online; ``ContinuousLearningLoop`` does the whole cycle.
    """

    def __init__(self, logger: Any, trigger_config: TriggerConfig | None = None, *,
                 generator_config: Any = None, output_dir: str | Path = "./.tuneloop/runs") -> None:
        self.db = _db_of(logger)
        self.logger = logger
        self.trigger = TriggerChecker(self.db, trigger_config or TriggerConfig())
        self.generator_config = generator_config
        self.output_dir = Path(output_dir)

    def check_triggers(self) -> list[TriggerResult]:
        return self.trigger.check()

    def check_and_retrain(self, train_fn: TrainFn) -> dict[str, Any] | None:
        """Returns None when no trigger fired, else what happened (trigger, data, train result)."""
        if hasattr(self.logger, "flush"):
            self.logger.flush()
        fired = [r for r in self.check_triggers() if r.fired]
        if not fired:
            return None
        from tuneloop.loop.stages import build_sft_dataset
        from tuneloop.loop.cycle import StepResult

        class _Stages:  # the retrainer's cycle: data, then the user's training function
            def build_dataset(inner, run):
                result = build_sft_dataset(self.db, self.generator_config, self.output_dir / run["id"])
                return StepResult("dataset_built", {"dataset_id": result.dataset_id},
                                  {"data_path": str(result.path), "final_count": result.final_count})

            def train(inner, run):
                out = train_fn(run["details"]["data_path"])
                return StepResult("completed", {}, {"train_result": out}, decision="trained")

        runner = CycleRunner(self.db, _Stages())  # type: ignore[arg-type]
        reason = "; ".join(f"{r.trigger}: {r.reason}" for r in fired)
        run_id = runner.start(None, reason)
        runner.step(run_id)
        runner.step(run_id)
        run = runner.get(run_id)
        details = run["details"] or {}
        return {"run_id": run_id, "state": run["state"], "error": run["error"],
                "trigger": {"reason": reason, "triggers": [r.trigger for r in fired], "time": now()},
                "data_path": details.get("data_path"), "dataset_id": run["dataset_id"],
                "sample_count": details.get("final_count"), "train_result": details.get("train_result")}
