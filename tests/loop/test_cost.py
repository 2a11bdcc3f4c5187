"""Cost vs quality per cycle: what the store says a cycle used, priced; the skip rule; the report."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from tuneloop.errors import ConfigError
from tuneloop.ids import now
from tuneloop.loop.cost import CostConfig, CycleUsage, cost_report, cycle_cost, measure_usage, price, quality_change, record_costs
from tuneloop.loop.service import ContinuousLearningLoop
from tuneloop.store import schema

sys.path.insert(0, str(Path(__file__).parent))
import policy_support as ps  # noqa: E402

PRICES = {"currency": "EUR", "cpu_hour": 0.36, "gpu_hour": 3.6, "per_1k_judge_tokens": 2.0,
          "per_1k_shadow_tokens": 1.0, "per_annotation": 0.5}


def _usage(p, c):
    return {"usage": {"prompt_tokens": p, "completion_tokens": c}}


def _same_keys(rows):
    keys = {k for r in rows for k in r}
    return [{k: r.get(k) for k in keys} for r in rows]


def _world(db):
    """Two dataset snapshots, judge grades and preferences, human annotations, shadow answers, an experiment."""
    t = now()
    inter = [{"id": f"i{k}", "ts": t, "query": "q", "response": "r", "model": "m"} for k in range(1, 10)]
    inter += [{"id": f"s{k}", "ts": t, "query": "q", "response": "r", "model": "m", "arm": "shadow", "version_id": "v1",
               "prompt_tokens": 10, "completion_tokens": 20} for k in range(3)]
    inter.append({"id": "s9", "ts": t, "query": "q", "response": "r", "model": "m", "arm": "shadow", "version_id": "v2",
                  "prompt_tokens": 1000, "completion_tokens": 1000})
    fb = [{"id": "f1", "interaction_id": "i1", "kind": "rating", "value": 4, "source": "judge", "ts": t, "meta": _usage(100, 5)},
          {"id": "f2", "interaction_id": "i2", "kind": "rating", "value": 2, "source": "judge", "ts": t, "meta": _usage(120, 4)},
          {"id": "f3", "interaction_id": "i3", "kind": "rating", "value": 5, "source": "judge", "ts": t, "meta": {"judge": "old"}},
          {"id": "f4", "interaction_id": "i9", "kind": "rating", "value": 5, "source": "judge", "ts": t, "meta": _usage(999, 9)},
          {"id": "f5", "interaction_id": "i1", "kind": "thumbs", "value": 1, "source": "user", "ts": t}]
    ann = [{"id": "a1", "interaction_id": "i1", "kind": "rating", "status": "done", "annotator": "alice", "created_at": t},
           {"id": "a2", "interaction_id": "i2", "kind": "rating", "status": "done", "annotator": "bob", "created_at": t},
           {"id": "a3", "interaction_id": "i3", "kind": "rating", "status": "queued", "created_at": t},
           {"id": "a4", "interaction_id": "i4", "kind": "pairwise", "status": "done", "annotator": "judge:gpt",
            "meta": _usage(200, 10), "created_at": t},
           {"id": "a5", "interaction_id": "i9", "kind": "rating", "status": "done", "annotator": "carol", "created_at": t}]
    members = [("d1", f"i{k}") for k in (1, 2, 3, 4)] + [("d2", "i1"), ("d2", "i5")]
    decision = {"decision": "promote", "primary_metric": "positive_feedback_rate",
                "metrics": {"control": {"positive_feedback_rate": 0.60}, "treatment": {"positive_feedback_rate": 0.65}}}
    with db.begin() as conn:
        conn.execute(schema.interactions.insert(), _same_keys(inter))
        conn.execute(schema.feedback.insert(), _same_keys(fb))
        conn.execute(schema.annotations.insert(), _same_keys(ann))
        conn.execute(schema.datasets.insert(), [{"id": d, "kind": "sft", "created_at": t} for d in ("d1", "d2")])
        conn.execute(schema.dataset_members.insert(), [{"dataset_id": d, "interaction_id": i} for d, i in members])
        conn.execute(schema.experiments.insert(), {"id": "x1", "mode": "ab", "control_id": "v0", "treatment_id": "v1",
                                                   "salt": "s", "status": "promoted", "decision": decision, "started_at": t})
        conn.execute(schema.loop_runs.insert(), {
            "id": "r1", "state": "promoted", "decision": "promoted", "version_id": "v1", "dataset_id": "d1",
            "experiment_id": "x1", "train_run_id": "r1-train1", "started_at": t - 4000, "updated_at": t, "ended_at": t,
            "details": {"datasets": {"sft": {"id": "d1"}, "dpo": {"id": "d2"}}, "lever": "adapter",
                        "timings": {"build_dataset": 10.0, "train": 3600.0, "gate": 360.0},
                        "train": {"metrics": {"device": "cuda"}},
                        "gate": {"passed": True, "pass_rate": 0.9, "champion_pass_rate": 0.8}}})
    return db.fetch_one(sa.select(schema.loop_runs).where(schema.loop_runs.c.id == "r1"))


def test_usage_counts_only_what_the_cycles_datasets_and_challenger_used(db):
    run = _world(db)
    u = measure_usage(db, run)
    # judge: grades of i1, i2, i3 (i3 stored without tokens) and a preference on i4; never i9 (not in the data)
    assert (u.judge_calls, u.judge_tokens, u.judge_calls_unmetered) == (4, 105 + 124 + 210, 1)
    assert u.annotations == 2  # alice and bob; not the queued one, not the judge's, not carol's (i9)
    assert (u.shadow_requests, u.shadow_tokens, u.shadow_generated_tokens) == (3, 90, 60)  # only v1's shadow answers
    assert u.device == "gpu" and u.stage_seconds["train"] == 3600.0


def test_cycle_cost_prices_usage_next_to_the_quality_it_bought(db):
    run = _world(db)
    cost = cycle_cost(db, run, CostConfig.from_dict(PRICES))
    m = cost["money"]
    # compute: 10 s on CPU + (3600 s + 360 s) on the GPU; judge 439 tokens; shadow 90; 2 annotations
    assert m["compute"] == pytest.approx(10 / 3600 * 0.36 + 3960 / 3600 * 3.6)
    assert (m["judge"], m["shadow"], m["annotation"]) == (pytest.approx(0.878), pytest.approx(0.09), 1.0)
    assert m["total"] == pytest.approx(3.961 + 0.878 + 0.09 + 1.0)
    q = cost["quality"]
    assert q["source"] == "experiment:positive_feedback_rate" and q["points"] == pytest.approx(5.0) and q["shipped"]
    assert cost["cost_per_point"] == pytest.approx(m["total"] / 5.0) and cost["currency"] == "EUR"
    assert record_costs(db, CostConfig.from_dict(PRICES)) == ["r1"] and record_costs(db) == []  # stored once
    report = cost_report(db, CostConfig())  # the stored cost keeps the prices it was recorded with
    assert report.cycles[0]["money"] == pytest.approx(m["total"]) and report.total_points == pytest.approx(5.0)


def test_quality_change_without_an_experiment_is_the_gate_delta_and_buys_nothing_unless_shipped():
    rejected = {"state": "rejected", "details": {"gate": {"pass_rate": 0.55, "champion_pass_rate": 0.6}}}
    q = quality_change(rejected, None)
    assert (q.points, q.source, q.bought) == (pytest.approx(-5.0), "gate:pass_rate", 0.0)
    promoted = {"state": "promoted", "details": {"gate": {"pass_rate": 0.7, "champion_pass_rate": 0.6}}}
    assert quality_change(promoted, None).bought == pytest.approx(10.0)
    assert quality_change({"state": "failed", "details": {}}, None).points is None
    assert price(CycleUsage(stage_seconds={"train": 3600}, device="cpu"), CostConfig(cpu_hour=1, gpu_hour=9))["total"] == 1.0


def test_bad_prices_and_rules_are_named():
    with pytest.raises(ConfigError, match="cpu_hour"):
        CostConfig(cpu_hour=-1)
    with pytest.raises(ConfigError, match="last_n"):
        CostConfig.from_dict({"skip_finetune_below": {"min_points": 1, "last_n": 0}})
    with pytest.raises(ConfigError, match="unknown cost_config keys"):
        CostConfig.from_dict({"gpu_hours": 2})


def _auto_loop(db, tmp_path, stages, **over):
    cfg = ps.config(db, tmp_path, trigger_config={"enable_sample_count": False, "enable_scheduled": True,
                                                  "schedule_interval_hours": 0, "cooldown_hours": 0,
                                                  "enable_quality_drop": False, "enable_error_rate": False},
                    cost_config={**PRICES, "skip_finetune_below": {"min_points": 1.0, "last_n": 3}}, **over)
    return ContinuousLearningLoop(cfg, db=db, stages=stages)


def test_every_finished_cycle_records_its_cost_and_the_cli_reports_it(db, tmp_path, db_url):
    loop = _auto_loop(db, tmp_path, ps.ScriptedStages(db))
    result = loop.run_iteration()
    assert result["state"] == "rejected"
    run = db.fetch_one(sa.select(schema.loop_runs))
    cost = run["details"]["cost"]
    assert set(cost["usage"]["stage_seconds"]) == {"build_dataset", "train", "register", "gate"}
    assert cost["quality"] == {"points": pytest.approx(-10.0), "source": "gate:pass_rate", "unit": "pp",
                               "shipped": False, "bought": 0.0}
    assert cost["cost_per_point"] is None and cost["currency"] == "EUR"
    summary = loop.get_status_summary()
    assert summary["recent_runs"][0]["quality_points"] == pytest.approx(-10.0) and summary["cost"]["cycles"] == 1
    from tuneloop.cli import app

    cfg_file = tmp_path / "loop.json"
    cfg_file.write_text(json.dumps({"cost_config": PRICES}))
    r = CliRunner().invoke(app, ["--db", db_url, "loop", "cost", "--config", str(cfg_file)], env={"COLUMNS": "250"})
    assert r.exit_code == 0, r.output
    # a narrow console cuts the table's cells; the numbers are checked in --json below
    assert "cost vs quality (EUR)" in r.stdout
    r = CliRunner().invoke(app, ["--db", db_url, "loop", "cost", "--json"])
    cycle = json.loads(r.stdout)["cycles"][0]
    assert cycle["quality_source"] == "gate:pass_rate" and cycle["id"] == run["id"]
    assert cycle["points"] == pytest.approx(-10.0)


def test_skip_finetune_below_holds_fine_tuning_after_cycles_that_bought_too_little(db, tmp_path):
    stages = ps.ScriptedStages(db, final="rejected")
    loop = _auto_loop(db, tmp_path, stages)
    for _ in range(3):  # three fine-tuning cycles, each rejected by the gate: 0 points bought
        assert loop.run_iteration()["state"] == "rejected"
    held = loop.run_iteration()
    assert held["action"] == "held" and held["rule"] == "skip_finetune_below" and stages.started == 3
    lr = schema.loop_runs
    oldest = min(r["ended_at"] for r in db.fetch_all(sa.select(lr)))
    assert held["until"] == pytest.approx(oldest + 30 * 86400)
    te = schema.trigger_events
    event = db.fetch_one(sa.select(te).where(te.c.trigger == "policy"))
    assert event["details"]["rule"] == "skip_finetune_below" and event["details"]["mean_points"] == 0.0
    assert ps.audit(db, "policy_hold")[0]["after"]["rule"] == "skip_finetune_below"
    # a prompt cycle is not fine-tuning: it may still run
    stages.lever = "prompt"
    assert loop.run_iteration()["action"] == "started"


def test_cycles_that_bought_enough_keep_fine_tuning_going(db, tmp_path):
    stages = ps.ScriptedStages(db, final="promoted", gate=(0.9, 0.8))  # +10 points each, shipped
    loop = _auto_loop(db, tmp_path, stages)
    for _ in range(4):
        assert loop.run_iteration()["state"] == "promoted"
    assert stages.started == 4
