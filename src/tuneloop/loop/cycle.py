"""One retraining cycle as a persisted state machine, resumable after a crash.

    triggered ─► dataset_built ─► trained ─► registered ─► gated ─► experimenting ─► promoted
        │              │             │                        │            └──────► rolled_back
        └──────────────┴─────────────┴──► failed              └─► rejected
    (approval mode: gated ─► awaiting_approval ─► experimenting | rejected, by an admin)

Each transition runs one stage and then persists the new state in ``loop_runs`` in one
transaction. Stages are idempotent: each first looks for the output it would make for this
run (by ``loop_run_id``), so a daemon killed between finishing a stage and persisting the
state resumes without repeating the work. ``TUNELOOP_CRASH_AT=<state>:before|after`` makes
the process exit abruptly at that point; the crash-resume tests use it.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import sqlalchemy as sa

from tuneloop.errors import NotFoundError
from tuneloop.ids import new_id, now
from tuneloop.store import Database, schema

log = logging.getLogger("tuneloop.loop")

ORDER = ("triggered", "dataset_built", "trained", "registered", "gated", "awaiting_approval", "experimenting")
FINAL = ("promoted", "rolled_back", "rejected", "failed", "completed")


@dataclass(frozen=True)
class StepResult:
    """What a stage did: the next state, run columns to set, and details to merge."""

    state: str
    fields: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    decision: str | None = None


class CycleStages(Protocol):
    """The work of each transition; ``loop/stages.py`` composes the real packages."""

    def build_dataset(self, run: dict) -> StepResult: ...
    def train(self, run: dict) -> StepResult: ...
    def register(self, run: dict) -> StepResult: ...
    def gate(self, run: dict) -> StepResult: ...
    def start_experiment(self, run: dict) -> StepResult: ...
    def decide(self, run: dict) -> StepResult | None: ...


_STEP_FOR_STATE = {
    "triggered": "build_dataset",
    "dataset_built": "train",
    "trained": "register",
    "registered": "gate",
    "gated": "start_experiment",
    "awaiting_approval": "start_experiment",  # moves only once an admin approved (approval mode)
    "experimenting": "decide",
}


def _maybe_crash(state: str, when: str) -> None:
    if os.environ.get("TUNELOOP_CRASH_AT") == f"{state}:{when}":
        log.warning("TUNELOOP_CRASH_AT=%s:%s: exiting abruptly", state, when)
        os._exit(137)


class CycleRunner:
    """Starts cycles and advances them one persisted transition at a time."""

    def __init__(self, db: Database, stages: CycleStages) -> None:
        self.db, self.stages = db, stages

    def start(self, trigger_event_id: str | None, reason: str) -> str:
        run_id, t = new_id(), now()
        with self.db.begin() as conn:
            conn.execute(schema.loop_runs.insert(), {
                "id": run_id, "state": "triggered", "trigger_event_id": trigger_event_id,
                "details": {"reason": reason, "timings": {}, "history": [["triggered", t]]},
                "started_at": t, "updated_at": t})
        _maybe_crash("triggered", "after")
        return run_id

    def get(self, run_id: str) -> dict:
        row = self.db.fetch_one(sa.select(schema.loop_runs).where(schema.loop_runs.c.id == run_id))
        if row is None:
            raise NotFoundError(f"loop run {run_id!r} does not exist")
        return row

    def active(self) -> dict | None:
        """The unfinished cycle, if any (there is at most one: the leader lock sees to it)."""
        lr = schema.loop_runs
        return self.db.fetch_one(sa.select(lr).where(lr.c.state.not_in(FINAL)).order_by(lr.c.started_at.desc()).limit(1))

    def step(self, run_id: str) -> tuple[str, bool]:
        """Run the stage of the current state. Returns (state, moved)."""
        run = self.get(run_id)
        state = run["state"]
        if state in FINAL:
            return state, False
        stage = getattr(self.stages, _STEP_FOR_STATE[state])
        t0 = time.perf_counter()
        try:
            result = stage(run)
        except Exception as exc:  # a failed stage ends the cycle; the error is kept
            log.exception("cycle %s failed in %s", run_id, _STEP_FOR_STATE[state])
            result = StepResult("failed", {"error": f"{type(exc).__name__}: {exc}"}, decision="failed")
        if result is None:  # decide(): not yet
            return state, False
        _maybe_crash(result.state, "before")
        self._persist(run, result, time.perf_counter() - t0)
        _maybe_crash(result.state, "after")
        return result.state, True

    def _persist(self, run: dict, result: StepResult, seconds: float) -> None:
        t = now()
        details = dict(run.get("details") or {})
        timings = dict(details.get("timings") or {})
        stage = _STEP_FOR_STATE[run["state"]]
        timings[stage] = round(timings.get(stage, 0.0) + seconds, 3)
        details.update(result.details)
        details["timings"] = timings
        details["history"] = list(details.get("history") or []) + [[result.state, t]]
        values = {**result.fields, "state": result.state, "details": details, "updated_at": t}
        if result.decision:
            values["decision"] = result.decision
        if result.state in FINAL:
            values["ended_at"] = t
        lr = schema.loop_runs
        with self.db.begin() as conn:
            conn.execute(lr.update().where(lr.c.id == run["id"], lr.c.state == run["state"]).values(**values))

    def advance(self, run_id: str, *, max_steps: int = 20) -> str:
        """Step until the cycle is final or waits on its online experiment."""
        state = self.get(run_id)["state"]
        for _ in range(max_steps):
            state, moved = self.step(run_id)
            if not moved or state in FINAL:
                break
        return state
