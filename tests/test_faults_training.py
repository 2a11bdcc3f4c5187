"""A training subprocess that crashes mid-run: the failure is recorded, the loop retries within
its limit, and a half-trained model is never returned nor registered."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from tuneloop.errors import TrainingError
from tuneloop.store import schema
from tuneloop.train.command import CommandTrainer
from tuneloop.train.runner import TrainingRunner

# Writes a plausible half-finished adapter, reports progress, then dies like an OOM-killed job.
CRASH = """
import json, os, pathlib, sys
out = pathlib.Path(sys.argv[1]) / "adapter"
out.mkdir(parents=True, exist_ok=True)
(out / "adapter_config.json").write_text(json.dumps({"r": 8}))
print("step 1/10 loss 2.31", flush=True)
print("step 2/10 loss 2.05", flush=True)
os._exit(int(sys.argv[2]))
"""


def _data(tmp_path: Path) -> Path:
    p = tmp_path / "sft.jsonl"
    p.write_text(json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}) + "\n")
    return p


def _base(tmp_path: Path) -> Path:
    base = tmp_path / "base"
    base.mkdir(exist_ok=True)
    (base / "config.json").write_text("{}")
    return base


def _runs(db) -> list[dict]:
    return db.fetch_all(sa.select(schema.train_runs).order_by(schema.train_runs.c.id))


@pytest.mark.parametrize("code", [1, 137])
def test_a_crashing_training_command_is_a_recorded_failure_with_no_model(db, tmp_path, code):
    script = tmp_path / "crash.py"
    script.write_text(CRASH)
    trainer = CommandTrainer(["{python}", str(script), "{output_dir}", str(code)])
    runner = TrainingRunner(db, show_progress=False)
    with pytest.raises(TrainingError, match=f"exited with code {code}") as err:
        runner.run(trainer, _data(tmp_path), tmp_path / "run", str(_base(tmp_path)), run_id="r1")
    [run] = _runs(db)
    assert run["status"] == "failed" and f"code {code}" in run["error"] and run["ended_at"] is not None
    assert run["version_id"] is None
    assert "step 2/10" in Path(run["log_path"]).read_text()          # the log keeps what happened
    assert err.value.details["run_id"] == "r1"
    assert db.scalar(sa.select(sa.func.count()).select_from(schema.model_versions)) == 0


def test_a_hung_training_run_is_killed_at_its_timeout(db, tmp_path):
    trainer = CommandTrainer(["{python}", "-c", "import time; print('started', flush=True); time.sleep(60)"])
    runner = TrainingRunner(db, show_progress=False, timeout_s=1.5)
    with pytest.raises(TrainingError, match="timed out"):
        runner.run(trainer, _data(tmp_path), tmp_path / "run", str(_base(tmp_path)))
    assert _runs(db)[0]["status"] == "failed"


def test_the_loop_retries_a_crashed_training_within_its_limit_and_registers_nothing(db, tmp_path):
    from tuneloop.loop.config import LoopConfig
    from tuneloop.loop.training import MAX_ATTEMPTS, train_candidate

    calls = []

    def crashing_train_fn(data_path, output_dir):
        calls.append(data_path)
        (Path(output_dir) / "model").mkdir(parents=True, exist_ok=True)  # half a model on disk
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    config = LoopConfig(base_model=str(_base(tmp_path)), data_dir=str(tmp_path))
    data = _data(tmp_path)
    run = {"id": "cycle1", "details": {"datasets": {"sft": {"id": "d1", "path": str(data), "rows": 1}}}}
    for attempt in range(1, MAX_ATTEMPTS + 1):
        with pytest.raises(TrainingError, match="illegal memory access"):
            train_candidate(db, config, run, tmp_path / "out", train_fn=crashing_train_fn)
        assert len(calls) == attempt
    with pytest.raises(TrainingError, match=f"failed {MAX_ATTEMPTS} times"):
        train_candidate(db, config, run, tmp_path / "out", train_fn=crashing_train_fn)
    assert len(calls) == MAX_ATTEMPTS                                   # the limit holds: no third run
    assert [r["status"] for r in _runs(db)] == ["failed"] * MAX_ATTEMPTS
    assert all(r["dataset_id"] == "d1" for r in _runs(db))
    assert db.scalar(sa.select(sa.func.count()).select_from(schema.model_versions)) == 0


def test_runner_never_returns_a_model_without_an_artifact(db, tmp_path):
    """Exit 0 but nothing on disk (a job that 'succeeded' without saving) is a failure too."""
    trainer = CommandTrainer([sys.executable, "-c", "print('done')"])
    with pytest.raises(TrainingError, match="no adapter or model"):
        TrainingRunner(db, show_progress=False).run(trainer, _data(tmp_path), tmp_path / "r", str(_base(tmp_path)))
    assert _runs(db)[0]["status"] == "failed"
