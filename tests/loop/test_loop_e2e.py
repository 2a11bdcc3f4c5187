"""The whole cycle on real components: SQLite/PostgreSQL, TRL LoRA on the tiny model in a
subprocess, the golden gate, the A/B manager. Killed at every step, it resumes without
repeating finished work; a challenger trained on inverted preferences is never promoted."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa

from tuneloop.store import Database, schema

sys.path.insert(0, str(Path(__file__).parent))
import loop_support  # noqa: E402

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {support!r})
    import loop_support
    from tuneloop.loop.config import LoopConfig
    from tuneloop.loop.cycle import FINAL
    from tuneloop.loop.service import ContinuousLearningLoop
    loop = ContinuousLearningLoop(LoopConfig.from_dict(json.loads(sys.argv[1])))
    for _ in range(20):
        result = loop.run_iteration()
        if result.get("state") == "experimenting":
            loop_support.synthesize_ab(loop.db)
        if result.get("state") in FINAL:
            print(result["state"])
            break
""").format(support=str(Path(__file__).parent))


@pytest.fixture(scope="module")
def base():
    return loop_support.addition_base()


def _run(cfg: dict, crash_at: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TUNELOOP_CRASH_AT"}
    env["HF_HUB_OFFLINE"] = "1"
    if crash_at:
        env["TUNELOOP_CRASH_AT"] = crash_at
    return subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(cfg)], env=env, capture_output=True, text=True, timeout=600)


def _count(db, table, *where) -> int:
    return int(db.scalar(sa.select(sa.func.count()).select_from(table).where(*where)) or 0)


STATES = ["triggered", "dataset_built", "trained", "registered", "gated", "experimenting", "promoted"]


def test_killed_at_every_step_resumes_without_repeating_work(base, db_url, tmp_path):
    """One cycle, killed once at each step; every restart continues where the last one died.

    "before" kills after a stage's work is done but before its new state is persisted: the
    hardest case, where only the stage's own idempotency prevents repeated work.
    """
    db = Database.open(db_url)
    loop_support.seed_world(db, base)
    cfg = loop_support.loop_config(tmp_path, db_url, base)
    lr = schema.loop_runs
    for state in STATES:
        when = "after" if state == "triggered" else "before"
        crashed = _run(cfg, f"{state}:{when}")
        assert crashed.returncode == 137, (state, crashed.stderr[-3000:])
        run = db.fetch_one(sa.select(lr))
        expected = STATES[STATES.index(state) - 1] if when == "before" else state
        assert run["state"] == expected, (state, run["state"])
    resumed = _run(cfg)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.strip().splitlines()[-1] == "promoted"
    tr, mv, ex = schema.train_runs, schema.model_versions, schema.experiments
    assert _count(db, lr) == 1
    assert _count(db, tr, tr.c.status == "succeeded") == 1
    assert _count(db, tr) == 1, "training ran again after a crash"
    assert _count(db, schema.datasets) == 1
    assert sorted(r["id"] for r in db.fetch_all(sa.select(mv.c.id))) == ["v0", "v1"]
    assert _count(db, ex) == 1
    assert _count(db, schema.eval_runs, schema.eval_runs.c.version_id == "v1") == 1
    champion = db.scalar(sa.select(schema.aliases.c.version_id).where(schema.aliases.c.name == "champion"))
    assert champion == "v1"
    run = db.fetch_one(sa.select(lr))
    assert run["state"] == "promoted" and run["decision"] == "promoted"
    assert set(run["details"]["timings"]) >= {"build_dataset", "train", "register", "gate", "start_experiment", "decide"}
    cost = run["details"]["cost"]  # recorded when the cycle ended: compute per stage, the lift it bought
    assert cost["compute_seconds"] >= run["details"]["timings"]["train"] > 0
    assert cost["quality"]["source"] == "experiment:positive_feedback_rate" and cost["quality"]["bought"] > 0


def test_challenger_trained_on_inverted_preferences_is_never_promoted(base, db_url, tmp_path):
    db = Database.open(db_url)
    # users "rewarded" wrong sums: the data says the opposite of what users want
    loop_support.seed_world(db, base, n=80, golden=40, wrong=True, golden_checker="contains")
    cfg = loop_support.loop_config(tmp_path, db_url, base, train_config={
        "max_steps": 60, "batch_size": 8, "num_threads": 1, "assistant_only_loss": True, "learning_rate": 2e-3})
    done = _run(cfg)
    assert done.returncode == 0, done.stderr[-3000:]
    run = db.fetch_one(sa.select(schema.loop_runs))
    assert run["state"] in ("rejected", "rolled_back"), run
    gate = run["details"]["gate"]
    assert not gate["passed"] and gate["pass_rate"] < gate["champion_pass_rate"]
    champion = db.scalar(sa.select(schema.aliases.c.version_id).where(schema.aliases.c.name == "champion"))
    assert champion == "v0"
    assert db.fetch_one(sa.select(schema.model_versions).where(schema.model_versions.c.id == "v1"))["status"] == "rejected"
