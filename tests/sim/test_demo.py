"""`tuneloop demo --fast` end to end: the tiny model gets better by itself, significantly."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tuneloop.sim.world import AdditionTask, SimUser, make_users
from tuneloop.sim.report import _lift_test, _per_cycle
from tuneloop.sim.demo import RoundStats


def test_world_checks_the_hidden_preference():
    task = AdditionTask(seed=0)
    q = task.golden()[0]
    assert task.check(q, q.expected) and task.check(q, f" {q.expected}\n")
    assert not task.check(q, f"The answer is {q.expected}.")
    assert not {p.prompt for p in task.golden()} & {task._q(a, b).prompt for a, b in task.traffic_pairs}


def test_users_give_feedback_at_a_realistic_rate():
    users = make_users(200, seed=1)
    assert all(0.1 <= u.feedback_rate <= 0.3 for u in users)
    reactions = [u.react(False) for u in users for _ in range(20)]
    assert 0.1 < sum(r.thumbs is not None for r in reactions) / len(reactions) < 0.3
    assert all(r.thumbs in (None, -1) for r in reactions)
    assert sum(r.regenerate for r in reactions) > 0


def test_report_compares_first_and_last_champion():
    rounds = [RoundStats(1, 1.0, 100, 5, {"v0": [5, 100]}, "v0", None),
              RoundStats(2, 2.0, 100, 50, {"v1": [50, 100]}, "v1", None)]
    cycles = _per_cycle(rounds)
    assert [c["champion"] for c in cycles] == ["v0", "v1"]
    lift = _lift_test({"v0": [5, 100], "v1": [50, 100]}, "v0", "v1")
    assert lift["significant"] and lift["difference"] == pytest.approx(0.45)
    # promoted in the last round: its answers in the challenger's arm still count
    assert _lift_test({"v0": [40, 100], "v2": [30, 40]}, "v0", "v2")["n_to"] == 40
    assert _lift_test({"v0": [5, 100]}, "v0", "v0") is None and _lift_test({"v0": [5, 100]}, "v0", None) is None


@pytest.mark.slow
@pytest.mark.sqlite_only
def test_fast_demo_improves_satisfaction_significantly(tmp_path):
    sys.path.insert(0, str(Path(__file__).parents[1] / "loop"))
    import loop_support

    loop_support.addition_base()  # shared with the loop tests: built once per machine
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "tuneloop.cli", "demo", "--fast", "--data-dir", str(tmp_path), "--budget", "300",
                           "--cache-dir", str(loop_support.CACHE)],
                          capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "fast" / "report.json").read_text())
    assert report["lift"]["significant"] and report["lift"]["rate_to"] > report["lift"]["rate_from"]
    assert any(d["state"] == "promoted" for d in report["decisions"])
    # the cheapest lever first: a prompt challenger wins, then (no candidate prompt left) a fine-tuned one
    won = [(d["lever"], d["version"]) for d in report["decisions"] if d["state"] == "promoted"]
    assert won[0][0] == "prompt" and ("adapter", won[-1][1]) in won[1:], report["decisions"]
    assert report["levers"]["per_lever"]["prompt"]["best_gain"] > 0.5  # users' preference is partly met by instruction
    assert "won with the prompt lever" in done.stdout and "won with the adapter lever" in done.stdout
    assert (tmp_path / "fast" / "satisfaction.png").stat().st_size > 10_000
    assert "satisfied" in done.stdout and "time per stage" in done.stdout
