"""The state machine on its own: a stages object that records calls (real store, real runner)."""
import subprocess
import sys
import textwrap

import sqlalchemy as sa

from tuneloop.loop.cycle import FINAL, CycleRunner, StepResult
from tuneloop.store import Database, schema


class RecordingStages:
    def __init__(self, gate_passes=True, decide_after=1):
        self.calls, self.gate_passes, self.decide_after = [], gate_passes, decide_after

    def build_dataset(self, run):
        self.calls.append("build_dataset")
        return StepResult("dataset_built", {"dataset_id": "d1"})

    def train(self, run):
        self.calls.append("train")
        return StepResult("trained", {"train_run_id": "t1"})

    def register(self, run):
        self.calls.append("register")
        return StepResult("registered", {"version_id": "v1"})

    def gate(self, run):
        self.calls.append("gate")
        if not self.gate_passes:
            return StepResult("rejected", {"eval_run_id": "e1"}, {"gate": "pass rate 0.1 < 0.8"}, decision="rejected")
        return StepResult("gated", {"eval_run_id": "e1"})

    def start_experiment(self, run):
        self.calls.append("start_experiment")
        return StepResult("experimenting", {"experiment_id": "x1"})

    def decide(self, run):
        self.calls.append("decide")
        if self.calls.count("decide") < self.decide_after:
            return None
        return StepResult("promoted", decision="promoted", details={"lift": 0.2})


def test_cycle_runs_to_promotion_and_records_timings(db):
    stages = RecordingStages(decide_after=2)
    runner = CycleRunner(db, stages)
    run_id = runner.start(None, "manual")
    assert runner.advance(run_id) == "experimenting"  # waits on the online test
    assert runner.active()["id"] == run_id
    assert runner.advance(run_id) == "promoted"
    run = runner.get(run_id)
    assert run["decision"] == "promoted" and run["ended_at"] is not None
    assert (run["dataset_id"], run["train_run_id"], run["version_id"], run["experiment_id"]) == ("d1", "t1", "v1", "x1")
    assert set(run["details"]["timings"]) == {"build_dataset", "train", "register", "gate", "start_experiment", "decide"}
    assert [h[0] for h in run["details"]["history"]] == ["triggered", "dataset_built", "trained", "registered", "gated", "experimenting", "promoted"]
    assert runner.active() is None


def test_gate_failure_rejects(db):
    runner = CycleRunner(db, RecordingStages(gate_passes=False))
    run_id = runner.start(None, "manual")
    assert runner.advance(run_id) == "rejected"
    assert "start_experiment" not in runner.stages.calls


def test_stage_exception_fails_the_cycle_with_the_error(db):
    class Broken(RecordingStages):
        def train(self, run):
            raise RuntimeError("out of memory")

    runner = CycleRunner(db, Broken())
    run_id = runner.start(None, "manual")
    assert runner.advance(run_id) == "failed"
    assert "out of memory" in runner.get(run_id)["error"]


def test_crash_between_stages_resumes_without_repeating(db_url, tmp_path):
    """A process killed right after persisting 'trained' resumes at register."""
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(tmp_path)!r})
        from tuneloop.store import Database
        from tuneloop.loop.cycle import CycleRunner
        from stages_mod import RecordingStages
        runner = CycleRunner(Database.open({db_url!r}), RecordingStages())
        run = runner.active()
        run_id = run["id"] if run else runner.start(None, "test")
        print(runner.advance(run_id))
    """)
    (tmp_path / "stages_mod.py").write_text("from tuneloop.loop.cycle import StepResult\n" + textwrap.dedent(
        __import__("inspect").getsource(RecordingStages)))
    env = {**__import__("os").environ, "TUNELOOP_CRASH_AT": "trained:after"}
    first = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert first.returncode == 137, first.stderr
    db = Database.open(db_url)
    assert db.fetch_one(sa.select(schema.loop_runs))["state"] == "trained"
    env.pop("TUNELOOP_CRASH_AT")
    second = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "promoted"
    assert db.fetch_one(sa.select(schema.loop_runs))["state"] in FINAL
