"""The update-rate policy: pure rules, and holds on the real stages, store and A/B manager."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from tuneloop.errors import ConfigError
from tuneloop.ids import now
from tuneloop.loop.config import LoopConfig
from tuneloop.loop.cycle import CycleRunner
from tuneloop.loop.policy import (HOUR, FreezeWindow, Promotion, UpdatePolicy, max_promotions_hold, parse_duration,
                                  promotion_hold, start_hold)
from tuneloop.loop.service import ContinuousLearningLoop
from tuneloop.loop.stages import DefaultStages
from tuneloop.registry.versions import Registry
from tuneloop.store import schema

sys.path.insert(0, str(Path(__file__).parent))
import policy_support as ps  # noqa: E402

DAY = 24 * HOUR


# --------------------------------------------------------------------------- pure rules
def test_durations_levers_and_windows_parse_with_clear_errors():
    assert parse_duration("90m", "x") == 1.5 and parse_duration("2w", "x") == 336.0 and parse_duration(3, "x") == 3.0
    p = UpdatePolicy.from_dict({"min_interval": {"prompt": "daily", "fine_tune": "7d", "base_model": "monthly"},
                                "freeze_windows": [{"start": "2026-12-24", "end": "2026-12-26", "reason": "xmas"}],
                                "max_promotions": {"count": 2, "period": "7d"}})
    assert p.min_interval_hours == {"prompt": 24.0, "adapter": 168.0, "base": 720.0}
    w = p.freeze_windows[0]
    assert (w.end - w.start) == 3 * DAY and w.reason == "xmas"  # a bare end date includes that day
    assert p.max_promotions == 2 and p.promotion_period_hours == 168.0
    for bad, match in [({"min_interval": {"rag": "1d"}}, "unknown lever"),
                       ({"min_interval": {"prompt": "soon"}}, "not a duration"),
                       ({"freeze_windows": [{"start": "2026-12-26", "end": "2026-12-24"}]}, "must be after"),
                       ({"freeze_windows": [{"start": "christmas", "end": "2026-12-24"}]}, "ISO date"),
                       ({"max_promotions": 0}, "max_promotions"),
                       ({"min_intervals": {}}, "unknown update_policy keys")]:
        with pytest.raises(ConfigError, match=match):
            UpdatePolicy.from_dict(bad)
    with pytest.raises(ConfigError, match="update_policy"):
        LoopConfig.from_dict({"update_policy": {"max_promotions": {"count": 2, "every": "7d"}}})


def test_rules_name_themselves_and_say_when_they_let_go():
    t = 100 * DAY
    history = [Promotion(t - 6 * DAY, "v2", "adapter"), Promotion(t - 2 * DAY, "v3", "prompt"),
               Promotion(t - 1 * DAY, "v4", "prompt")]
    p = UpdatePolicy(min_interval_hours={"prompt": 24, "adapter": 168}, max_promotions=2, promotion_period_hours=168)
    hold = start_hold(p, "adapter", history, t)
    assert hold.rule == "min_interval" and hold.until == t + 1 * DAY and "v2" in hold.reason
    assert start_hold(p, "prompt", history, t) is None  # exactly one day since the last prompt promotion
    assert start_hold(p, "base", history, t) is None  # no interval for base models
    quota = max_promotions_hold(p, history, t)
    # three promotions in the period, cap 2: the slot frees when the two oldest have aged out
    assert quota.rule == "max_promotions" and quota.until == t - 2 * DAY + 7 * DAY
    frozen = UpdatePolicy(freeze_windows=[FreezeWindow(t - HOUR, t + HOUR, "release")], max_promotions=2)
    hold = promotion_hold(frozen, "prompt", history, t)
    assert hold.rule == "freeze_window" and hold.until == t + HOUR and "release" in hold.reason
    assert promotion_hold(UpdatePolicy(), "adapter", history, t) is None


# --------------------------------------------------------------------------- before a cycle starts
def _loop(db, tmp_path, stages, **over):
    cfg = ps.config(db, tmp_path, trigger_config={"enable_sample_count": False, "enable_scheduled": True,
                                                  "schedule_interval_hours": 1, "cooldown_hours": 0,
                                                  "enable_quality_drop": False, "enable_error_rate": False}, **over)
    return ContinuousLearningLoop(cfg, db=db, stages=stages)


def test_min_interval_holds_a_cycle_start_and_says_which_rule(db, tmp_path, db_url):
    ps.champion(db)
    Registry(db).register("v1", backend="scripted", adapter_path="/a/v1")
    Registry(db).promote("v1")  # an adapter promoted just now
    stages = ps.ScriptedStages(db, lever="adapter")
    loop = _loop(db, tmp_path, stages, update_policy={"min_interval": {"adapter": "7d", "prompt": "1d"}})
    for _ in range(2):
        result = loop.run_iteration()
        assert result["action"] == "held" and result["rule"] == "min_interval" and result["fired"] == ["scheduled"]
    assert stages.started == 0 and db.scalar(sa.select(sa.func.count()).select_from(schema.loop_runs)) == 0
    te = schema.trigger_events
    held = db.fetch_all(sa.select(te).where(te.c.trigger == "policy"))
    assert len(held) == 2 and not held[0]["fired"] and held[0]["details"]["rule"] == "min_interval"
    assert held[0]["details"]["lever"] == "adapter" and "held by min_interval[adapter]" in held[0]["reason"]
    assert len(ps.audit(db, "policy_hold")) == 1  # audited once per distinct hold, not at every check
    status = loop.get_status_summary()
    assert status["policy"]["levers"]["adapter"]["rule"] == "min_interval"
    assert status["policy"]["levers"]["prompt"] is None
    assert any(t["trigger"] == "policy" and "min_interval" in t["reason"] for t in status["recent_triggers"])
    # a prompt cycle is not held by the adapter's interval
    stages.lever = "prompt"
    assert loop.run_iteration()["action"] == "started"
    # the CLI shows the hold (a config file with seed-style keys)
    cfg_file = tmp_path / "loop.json"
    cfg_file.write_text(json.dumps({"update_policy": {"min_interval": {"adapter": "weekly"}}}))
    from tuneloop.cli import app

    r = CliRunner().invoke(app, ["--db", db_url, "loop", "status", "--config", str(cfg_file)])
    assert r.exit_code == 0, r.output
    assert "held adapter" in r.stdout and "min_interval" in r.stdout


def test_a_manual_trigger_overrides_start_rules_and_the_override_is_audited(db, tmp_path):
    ps.champion(db)
    Registry(db).register("v1", backend="scripted", adapter_path="/a/v1")
    Registry(db).promote("v1")
    stages = ps.ScriptedStages(db)
    loop = _loop(db, tmp_path, stages, update_policy={"min_interval": {"adapter": "7d"}})
    loop.trigger("operator: retrain on the new data now")
    result = loop.run_iteration()
    assert result["action"] == "started" and "min_interval overridden by a manual trigger" in result["reason"]
    override = ps.audit(db, "policy_override")
    assert override and override[0]["after"]["rule"] == "min_interval"


# --------------------------------------------------------------------------- before a promotion
def test_freeze_window_holds_the_experiment_and_the_promotion_until_it_ends(db, tmp_path):
    ps.champion(db)
    t = now()
    window = [{"start": t - HOUR, "end": t + HOUR, "reason": "release week"}]
    cfg = ps.config(db, tmp_path, update_policy={"freeze_windows": window})
    runner, run_id = ps.gated_run(db, cfg)
    # 1. no new traffic reaches a challenger during the freeze: the cycle waits at gated
    assert runner.advance(run_id) == "gated"
    run = runner.get(run_id)
    assert run["details"]["policy_hold"]["rule"] == "freeze_window" and run["details"]["policy_hold"]["action"] == "start_experiment"
    assert db.fetch_all(sa.select(schema.experiments)) == []
    # 2. experiments may run during a freeze (freeze_holds_experiments=false), but nothing is promoted
    cfg = ps.config(db, tmp_path, update_policy={"freeze_windows": window, "freeze_holds_experiments": False})
    runner = CycleRunner(db, DefaultStages(db, cfg))
    assert runner.advance(run_id) == "experimenting"
    assert ps.outcomes(db, better=True)
    for _ in range(2):
        assert runner.advance(run_id) == "experimenting"
    exp = db.fetch_one(sa.select(schema.experiments))
    assert exp["status"] == "running" and exp["decision"]["decision"] == "promote"  # the A/B test says promote
    assert Registry(db).champion().id == "v0"  # ... the policy says wait
    run = runner.get(run_id)
    hold = run["details"]["policy_hold"]
    assert (hold["rule"], hold["action"], hold["state"]) == ("freeze_window", "promote", "experimenting")
    assert "release week" in hold["reason"] and hold["until"] == pytest.approx(t + HOUR)
    assert [h["action"] for h in run["details"]["holds"]] == ["start_experiment", "promote"]
    assert {a["target"] for a in ps.audit(db, "policy_hold")} == {f"loop_run:{run_id}"}
    # 3. the freeze is over: the winner is promoted at the next check, nothing retrained
    runner = CycleRunner(db, DefaultStages(db, ps.config(db, tmp_path)))
    assert runner.advance(run_id) == "promoted"
    assert Registry(db).champion().id == "v1"


def test_a_freeze_never_holds_a_rollback(db, tmp_path):
    ps.champion(db)
    t = now()
    cfg = ps.config(db, tmp_path, update_policy={"freeze_windows": [{"start": t - HOUR, "end": t + DAY}],
                                                 "freeze_holds_experiments": False})
    runner, run_id = ps.gated_run(db, cfg)
    assert runner.advance(run_id) == "experimenting"
    assert ps.outcomes(db, better=False)
    assert runner.advance(run_id) == "rolled_back"
    assert Registry(db).champion().id == "v0"


def test_max_promotions_per_period_holds_a_third_promotion(db, tmp_path):
    ps.champion(db)
    reg = Registry(db)
    for vid in ("p1", "p2"):
        reg.register(vid, backend="scripted", params={"script": {"default": vid}})
        reg.promote(vid)
    first = ps.audit(db, "promote")[1]["ts"]  # p1 (v0 was the bootstrap, not an update)
    cfg = ps.config(db, tmp_path, update_policy={"max_promotions": {"count": 2, "period": "7d"}})
    runner, run_id = ps.gated_run(db, cfg)
    assert runner.advance(run_id) == "experimenting"  # the quota holds promotions, not experiments
    ps.outcomes(db, better=True)
    assert runner.advance(run_id) == "experimenting"
    hold = runner.get(run_id)["details"]["policy_hold"]
    assert hold["rule"] == "max_promotions" and hold["until"] == pytest.approx(first + 7 * DAY)
    assert reg.champion().id == "p2"


def test_without_ab_testing_the_direct_promotion_waits_for_the_interval(db, tmp_path):
    ps.champion(db)
    Registry(db).register("v1", backend="scripted", adapter_path="/a/v1")
    Registry(db).promote("v1")
    cfg = ps.config(db, tmp_path, enable_ab_testing=False, update_policy={"min_interval": {"adapter": "7d"}})
    runner, run_id = ps.gated_run(db, cfg, vid="v2")
    assert runner.advance(run_id) == "gated"
    hold = runner.get(run_id)["details"]["policy_hold"]
    assert hold["rule"] == "min_interval" and hold["action"] == "promote"
    assert Registry(db).champion().id == "v1"
    # a prompt cycle has its own interval (none here): it is promoted at once
    runner, run_id = ps.gated_run(db, cfg, vid="v3", lever="prompt")
    lr = schema.loop_runs
    with db.begin() as conn:  # one cycle at a time: retire the held one
        conn.execute(lr.update().where(lr.c.state == "gated", lr.c.version_id == "v2").values(state="rejected"))
    assert runner.advance(run_id) == "promoted"


def test_the_readme_change_control_example_is_a_valid_loop_config(monkeypatch):
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    start = readme.index("```json", readme.index("### Change control")) + len("```json")
    example = json.loads(readme[start:readme.index("```", start)].replace("...", "T0/B0/X0"))
    monkeypatch.setenv("HOOK_SECRET", "s")
    cfg = LoopConfig.from_dict(example)
    assert cfg.update_policy.min_interval_hours["base"] == 720.0 and cfg.update_policy.max_promotions == 2
    assert cfg.cost_config.skip_finetune_below.min_points == 1.0 and cfg.webhooks[0].format == "slack"


@pytest.mark.parametrize("name", ["tuneloop.loop.policy", "tuneloop.loop.cost", "tuneloop.loop.holds",
                                  "tuneloop.loop.status", "tuneloop.notify.webhooks", "tuneloop.notify.notifier"])
def test_docstring_examples(name):
    import doctest
    import importlib

    from tuneloop.store import db as store_db

    store_db._migrated.clear()  # docstrings open fresh in-memory databases (see tests/registry)
    assert doctest.testmod(importlib.import_module(name)).failed == 0
