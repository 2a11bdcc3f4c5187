"""A small real world for the loop's end-to-end tests: the tiny model taught addition,
production rows with rewards, and synthetic A/B outcomes. Shared by tests and their subprocesses."""
from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path

import sqlalchemy as sa

from tuneloop.ids import new_id, now
from tuneloop.store import Database, schema

CACHE = Path(os.environ.get("TUNELOOP_TEST_CACHE", Path(tempfile.gettempdir()) / "tuneloop-test-cache"))


def addition_base() -> Path:
    """The pretrained tiny addition model, built once per machine (file-locked)."""
    import torch
    from filelock import FileLock

    from tuneloop.models.tiny import build_tiny_model
    from tuneloop.sim.pretrain import pretrain_addition

    CACHE.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    with FileLock(str(CACHE / "build.lock")):
        # the same layout as `tuneloop demo --cache-dir CACHE`, so the demo test reuses it
        tiny = build_tiny_model(CACHE / "models" / "tiny")
        return pretrain_addition(tiny, CACHE / "models" / "tiny-addition")


def loop_config(tmp: Path, db_url: str, base: Path, **over) -> dict:
    cfg = {
        "db_url": db_url, "output_dir": str(tmp / "runs"), "data_dir": str(CACHE), "check_interval_seconds": 0.1,
        "base_model": str(base), "gate_threshold": 0.0,
        "trigger_config": {"min_new_samples": 10, "cooldown_hours": 0, "min_quality_score": 0.5,
                           "enable_quality_drop": False, "enable_error_rate": False},
        "generator_config": {"min_quality_score": None, "min_user_feedback": 0.5, "format_type": "messages"},
        "train_config": {"max_steps": 4, "batch_size": 4, "num_threads": 1, "assistant_only_loss": True,
                         "learning_rate": 1e-3},
        "ab_test_config": {"initial_challenger_traffic": 0.5, "min_duration_hours": 0, "min_samples_per_version": 30,
                           "primary_metric": "positive_feedback_rate", "min_improvement_threshold": 0.0,
                           "sequential_tuning_samples": 200},
    }
    cfg.update(over)
    return cfg


def seed_world(db: Database, base: Path, *, n: int = 40, golden: int = 6, wrong: bool = False,
               golden_checker: str = "exact") -> None:
    """v0 as champion, a golden set, and ``n`` rewarded production answers (wrong ones if ``wrong``)."""
    from tuneloop.evaluate import golden as golden_set
    from tuneloop.registry.versions import Registry
    from tuneloop.sim.world import AdditionTask

    task = AdditionTask(seed=0)
    reg = Registry(db)
    reg.register("v0", backend="local", base_model=str(base), params={"max_tokens": 8})
    reg.promote("v0")
    lines = [json.dumps({"prompt": q.prompt, "expected": q.expected, "checker": golden_checker}) for q in task.golden()[:golden]]
    golden_set.import_jsonl(db, lines)
    rng = random.Random(1)
    rows = []
    for i in range(n):
        q = task.sample(rng)
        answer = str((int(q.expected) + 7) % 19) if wrong else q.expected
        rows.append({"id": new_id(), "ts": now() - 60, "user_id": f"u{i}", "session_id": f"s{i}", "model": "tuneloop",
                     "version_id": "v0", "query": q.prompt, "messages": [{"role": "user", "content": q.prompt}],
                     "response": answer, "reward": 1.0})
    with db.begin() as conn:
        conn.execute(schema.interactions.insert(), rows)


def synthesize_ab(db: Database, control_rate: float = 0.2, treatment_rate: float = 0.8, per_arm: int = 100) -> bool:
    """Outcomes of the running experiment's arms (treatment clearly better); once per experiment."""
    e, i = schema.experiments, schema.interactions
    exp = db.fetch_one(sa.select(e).where(e.c.status == "running"))
    if exp is None or db.scalar(sa.select(sa.func.count()).select_from(i).where(i.c.experiment_id == exp["id"])):
        return False
    rng = random.Random(2)
    rows, fb = [], []
    for arm, version, rate in (("control", exp["control_id"], control_rate), ("treatment", exp["treatment_id"], treatment_rate)):
        for k in range(per_arm):
            iid = new_id()
            rows.append({"id": iid, "ts": now(), "user_id": f"{arm}-{k}", "model": "tuneloop", "version_id": version,
                         "experiment_id": exp["id"], "arm": arm, "query": "1+1=", "response": "2", "latency_ms": 5.0})
            fb.append({"id": new_id(), "interaction_id": iid, "kind": "thumbs", "value": 1 if rng.random() < rate else -1, "ts": now()})
    with db.begin() as conn:
        conn.execute(schema.interactions.insert(), rows)
        conn.execute(schema.feedback.insert(), fb)
    return True


def follows_instruction(messages) -> str:
    """A scripted champion that obeys one instruction: with "number only" in its system prompt it
    answers sums with the bare number, otherwise with a sentence (``script_ref`` of test versions)."""
    system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
    q = messages[-1]["content"]
    total = sum(int(x) for x in q.rstrip("=").split("+")) if "+" in q else 0
    return str(total) if "number only" in system else f"The answer is {total}."
