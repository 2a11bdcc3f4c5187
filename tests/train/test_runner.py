"""The runner: subprocess, train_runs bookkeeping, and crashes that never become models."""
from __future__ import annotations

import sys
import textwrap

import pytest
import sqlalchemy as sa

from tuneloop.errors import TrainingError
from tuneloop.store import schema
from tuneloop.train.callable import CallableTrainer
from tuneloop.train.command import CommandTrainer
from tuneloop.train.runner import TrainingRunner
from tuneloop.train.trl_trainer import TRLConfig, TRLTrainer


def _runs(db):
    return db.fetch_all(sa.select(schema.train_runs))


def _runner(db, **kw):
    return TrainingRunner(db, show_progress=False, num_threads=1, **kw)


def test_a_crashing_training_process_is_recorded_failed(db, data_dir, tmp_path):
    crash = CommandTrainer([sys.executable, "-c", "import os, sys; print('about to crash'); sys.stdout.flush(); os._exit(3)"])
    with pytest.raises(TrainingError, match="exited with code 3") as info:
        _runner(db).run(crash, data_dir / "sft.jsonl", tmp_path / "crash", "tiny")
    [row] = _runs(db)
    assert row["status"] == "failed" and "exited with code 3" in row["error"]
    assert row["ended_at"] is not None and row["metrics"] is None
    assert info.value.details["run_id"] == row["id"]
    assert "about to crash" in (tmp_path / "crash" / "train.log").read_text()


def test_a_killed_worker_is_recorded_failed(db, data_dir, tmp_path):
    suicide = CommandTrainer([sys.executable, "-c", "import os, signal; os.killpg(0, signal.SIGKILL)"])
    with pytest.raises(TrainingError, match="killed by signal 9"):
        _runner(db).run(suicide, data_dir / "sft.jsonl", tmp_path / "killed", "tiny")
    assert [r["status"] for r in _runs(db)] == ["failed"]


def test_a_timeout_kills_the_run(db, data_dir, tmp_path):
    slow = CommandTrainer([sys.executable, "-c", "import time; time.sleep(60)"])
    with pytest.raises(TrainingError, match="timed out after 2s"):
        _runner(db, timeout_s=2).run(slow, data_dir / "sft.jsonl", tmp_path / "slow", "tiny")
    [row] = _runs(db)
    assert row["status"] == "failed" and "timed out" in row["error"]


def test_bad_data_fails_in_the_worker_with_a_clear_reason(db, tiny_path, data_dir, tmp_path):
    with pytest.raises(TrainingError, match=r"DatasetError: .*sft rows need columns"):
        _runner(db).run(TRLTrainer(TRLConfig(max_steps=2)), data_dir / "bad_sft.jsonl", tmp_path / "bad", str(tiny_path))
    [row] = _runs(db)
    assert row["status"] == "failed" and "need columns" in row["error"]
    assert not (tmp_path / "bad" / "adapter").exists()


def test_command_that_exits_zero_without_a_model_is_failed(db, data_dir, tmp_path):
    lazy = CommandTrainer([sys.executable, "-c", "print('did nothing')"])
    with pytest.raises(TrainingError, match="left no adapter or model"):
        _runner(db).run(lazy, data_dir / "sft.jsonl", tmp_path / "lazy", "tiny")
    assert _runs(db)[0]["status"] == "failed"


SCRIPT = textwrap.dedent("""
    import json, pathlib, sys
    data, base, out, cfg = sys.argv[1:5]
    cfg = json.loads(pathlib.Path(cfg).read_text())
    rows = sum(1 for _ in open(data))
    model = pathlib.Path(out) / "model"
    model.mkdir(parents=True, exist_ok=True)
    (model / "config.json").write_text(json.dumps({"base": base}))
    (pathlib.Path(out) / "all_results.json").write_text(json.dumps({"train_loss": 0.5, "rows": rows, "lr": cfg["lr"]}))
""")


def test_command_trainer_fills_placeholders_and_collects_results(db, data_dir, tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    trainer = CommandTrainer(f"{{python}} {script} {{data_path}} {{base_model}} {{output_dir}} {{config_path}}",
                             method="sft")
    result = _runner(db).run(trainer, data_dir / "sft.jsonl", tmp_path / "cmd", "ext/model-id", {"lr": 0.01})
    assert result.model_path == str(tmp_path / "cmd" / "model") and result.adapter_path is None
    assert result.metrics["rows"] == 40 and result.metrics["lr"] == 0.01
    assert result.metrics["train_loss_last"] == 0.5
    row = _runs(db)[0]
    assert row["status"] == "succeeded" and row["backend"] == "command" and row["config"] == {"lr": 0.01}


def test_callable_trainer_in_a_subprocess(db, data_dir, tmp_path):
    (tmp_path / "my_training.py").write_text(textwrap.dedent("""
        import os, pathlib
        def train_model(data_path, output_dir):
            path = pathlib.Path(output_dir) / "model.pth"
            path.write_text("weights")
            return {"loss": 0.25, "accuracy": 0.85, "model_path": str(path), "pid": os.getpid()}
    """))
    trainer = CallableTrainer("my_training:train_model")
    result = _runner(db, env={"PYTHONPATH": str(tmp_path)}).run(trainer, data_dir / "sft.jsonl", tmp_path / "c", None)
    import os

    assert result.metrics["loss"] == 0.25 and result.metrics["accuracy"] == 0.85
    assert result.metrics["pid"] != os.getpid()  # it really ran in the worker
    assert _runs(db)[0]["status"] == "succeeded"


def test_callable_closure_runs_in_process_and_failures_are_recorded(db, data_dir, tmp_path):
    calls = []

    def train_fn(data_path):  # seed 002's signature
        calls.append(data_path)
        model = tmp_path / "closure_model.pth"
        model.write_text("w")
        return {"model_path": str(model), "metrics": {"loss": 0.1}}

    result = _runner(db).run(CallableTrainer(train_fn), data_dir / "sft.jsonl", tmp_path / "ok", None)
    assert calls and result.metrics == {"loss": 0.1} and result.model_path.endswith("closure_model.pth")

    def broken(data_path):
        raise RuntimeError("GPU fell off the bus")

    with pytest.raises(TrainingError, match="GPU fell off the bus"):
        _runner(db).run(CallableTrainer(broken), data_dir / "sft.jsonl", tmp_path / "broken", None)

    def no_model(data_path):
        return {"model_path": str(tmp_path / "never_written.pth")}

    with pytest.raises(TrainingError, match="no adapter or model folder"):
        _runner(db).run(CallableTrainer(no_model), data_dir / "sft.jsonl", tmp_path / "none", None)
    assert sorted(r["status"] for r in _runs(db)) == ["failed", "failed", "succeeded"]


def test_missing_llamafactory_cli_is_a_failed_run(db, data_dir, tmp_path):
    from tuneloop.train.llamafactory import llamafactory_trainer

    trainer = llamafactory_trainer("dpo", cli="llamafactory-cli-not-installed")
    with pytest.raises(TrainingError, match="cannot start training command"):
        _runner(db).run(trainer, data_dir / "dpo.jsonl", tmp_path / "lf", "ext/model", TRLConfig(method="dpo"))
    assert (tmp_path / "lf" / "llamafactory.yaml").exists()
    assert _runs(db)[0]["status"] == "failed"


def test_metrics_are_stored_as_json_both_databases_accept(db, data_dir, tmp_path):
    from tuneloop.train.runner import jsonable

    assert jsonable({"a": float("nan"), "b": [1.0, float("inf")], "c": (1, "x")}) == {"a": None, "b": [1.0, None],
                                                                                     "c": [1, "x"]}

    def nan_metrics(data_path, output_dir):
        model = tmp_path / "m.pth"
        model.write_text("w")
        return {"model_path": str(model), "metrics": {"eval_loss": float("nan"), "loss": 0.5}}

    result = _runner(db).run(CallableTrainer(nan_metrics), data_dir / "sft.jsonl", tmp_path / "nan", None)
    row = _runs(db)[0]
    assert row["status"] == "succeeded" and row["metrics"]["eval_loss"] is None and row["metrics"]["loss"] == 0.5
    assert result.run_id == row["id"]
