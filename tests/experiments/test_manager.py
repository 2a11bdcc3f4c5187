"""ABTestManager decisions on simulated traffic stored in SQLite / PostgreSQL."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from tuneloop.errors import ConfigError, ConflictError, NotFoundError, ValidationError
from tuneloop.experiments import ABTestConfig, ABTestManager, records, start_experiment
from tuneloop.ids import new_id, now
from tuneloop.store import schema

FAST = dict(min_duration_hours=0, min_samples_per_version=200, initial_challenger_traffic=0.5)


def _audit_actions(db):
    return [r["action"] for r in db.fetch_all(sa.select(schema.audit_log).order_by(schema.audit_log.c.id))]


def test_better_challenger_is_promoted_with_stored_statistics(db, reg, traffic):
    ab = ABTestManager(db, ABTestConfig(**FAST))
    exp = ab.deploy_challenger("v2", salt="test-salt")
    assert reg.alias("challenger").version_id == "v2"
    traffic.run(1500, {"v1": 0.4, "v2": 0.6})
    cmp = ab.compare_models()
    assert cmp.decision == "promote" and cmp.winner == "v2"
    assert cmp.ci[0] > 0.05 and cmp.improvement == pytest.approx(0.5, abs=0.2)
    assert not cmp.srm.mismatch and not cmp.breached
    assert ab.auto_promote_if_ready() is True
    assert reg.champion().id == "v2" and reg.get("v1").status == "archived"
    row = records.get(db, exp.id)
    assert row.status == "promoted" and row.decision["decision"] == "promote"
    assert row.decision["sequential"]["p_value"] < 0.05 and row.decision["ci"][0] > 0.05
    assert {"experiment_start", "promote", "experiment_promoted"} <= set(_audit_actions(db))
    assert ab.compare_models() is None and ab.auto_promote_if_ready() is False  # nothing running now


def test_worse_challenger_is_rolled_back(db, reg, traffic):
    ab = ABTestManager(db, ABTestConfig(**FAST))
    exp = ab.deploy_challenger("v2", salt="test-salt")
    traffic.run(1200, {"v1": 0.6, "v2": 0.35})
    assert ab.auto_promote_if_ready() is False
    row = records.get(db, exp.id)
    assert row.status == "rolled_back" and "significantly worse" in row.decision["reason"]
    assert reg.champion().id == "v1" and reg.get("v2").status == "rejected" and reg.alias("challenger") is None
    assert ab.route_request("anyone") == "v1"


def test_equal_challenger_is_never_promoted_across_many_looks(db, reg, traffic):
    ab = ABTestManager(db, ABTestConfig(**FAST))
    exp = ab.deploy_challenger("v2", salt="test-salt")
    looks = 0
    for _ in range(8):
        traffic.run(250, {"v1": 0.5, "v2": 0.5})
        assert ab.auto_promote_if_ready() is False
        looks += 1
        if records.get(db, exp.id).status != "running":
            break
    row = records.get(db, exp.id)
    # Equal arms: keep watching, or stop for futility once the CI excludes a +5% lift.
    assert (row.status, row.decision["decision"]) in {("running", "continue"), ("stopped", "stop")}
    if row.status == "running":
        assert row.state["sequential"]["looks"] == looks
    else:
        assert "futility" in row.decision["reason"]
    assert reg.champion().id == "v1"


def test_max_samples_ends_an_undecided_experiment_keeping_the_champion(db, reg, traffic):
    ab = ABTestManager(db, ABTestConfig(**{**FAST, "min_improvement_threshold": 0.0, "max_samples_per_version": 300}))
    exp = ab.deploy_challenger("v2", salt="test-salt")
    traffic.run(300, {"v1": 0.5, "v2": 0.5})
    assert ab.auto_promote_if_ready() is False and records.get(db, exp.id).status == "running"  # < 300 per arm yet
    traffic.run(500, {"v1": 0.5, "v2": 0.5})
    assert ab.auto_promote_if_ready() is False
    row = records.get(db, exp.id)
    assert row.status == "stopped" and "inconclusive after 300" in row.decision["reason"]
    assert reg.champion().id == "v1"
    with pytest.raises(ValidationError, match="max_samples_per_version"):
        ABTestConfig(min_samples_per_version=100, max_samples_per_version=50)


def test_guardrail_breach_rolls_back_even_when_feedback_is_better(db, reg, traffic):
    ab = ABTestManager(db, ABTestConfig(**FAST))
    exp = ab.deploy_challenger("v2", salt="test-salt")
    traffic.run(600, {"v1": 0.4, "v2": 0.7}, latency={"v1": 100.0, "v2": 400.0})
    assert ab.auto_promote_if_ready() is False
    row = records.get(db, exp.id)
    assert row.status == "rolled_back" and "p95_latency_ratio" in row.decision["reason"]


def test_error_rate_guardrail(db, reg, traffic):
    ab = ABTestManager(db, ABTestConfig(**FAST))
    exp = ab.deploy_challenger("v2", salt="test-salt")
    traffic.run(600, {"v1": 0.5, "v2": 0.5}, errors={"v2": 0.2})
    ab.auto_promote_if_ready()
    assert records.get(db, exp.id).status == "rolled_back"
    assert "error_rate" in records.get(db, exp.id).decision["reason"]


def test_minimum_duration_and_samples_hold_a_winner(db, reg, traffic):
    t0 = now()
    clock = {"t": t0}
    cfg = ABTestConfig(min_duration_hours=48, min_samples_per_version=200, initial_challenger_traffic=0.5)
    ab = ABTestManager(db, cfg, clock=lambda: clock["t"])
    exp = ab.deploy_challenger("v2", salt="test-salt")
    traffic.run(100, {"v1": 0.2, "v2": 0.9})
    cmp = ab.compare_models()
    assert cmp.decision == "continue" and "need 200" in cmp.reason
    traffic.run(1000, {"v1": 0.2, "v2": 0.9})
    assert ab.auto_promote_if_ready() is False
    assert "of the required 48 h" in records.get(db, exp.id).decision["reason"]
    clock["t"] = t0 + 49 * 3600
    assert ab.auto_promote_if_ready() is True


def test_auto_promotion_disabled_records_but_does_not_act(db, reg, traffic):
    ab = ABTestManager(db, ABTestConfig(**FAST, enable_auto_promotion=False))
    exp = ab.deploy_challenger("v2", salt="test-salt")
    traffic.run(1500, {"v1": 0.3, "v2": 0.7})
    assert ab.auto_promote_if_ready() is False
    row = records.get(db, exp.id)
    assert row.status == "running" and "disabled" in row.decision["reason"]
    assert ab.promote().id == "v2" and reg.champion().id == "v2"  # a person decides


def test_weighted_rule_from_seed(db, reg, traffic):
    cfg = ABTestConfig(**FAST, rule="weighted")
    ab = ABTestManager(db, cfg)
    exp = ab.deploy_challenger("v2", salt="test-salt")
    traffic.run(800, {"v1": 0.5, "v2": 0.6}, quality_score={"v1": 0.6, "v2": 0.75})
    cmp = ab.compare_models()
    assert cmp.rule == "weighted" and cmp.improvement > 0.05 and cmp.decision == "promote"
    assert ab.auto_promote_if_ready() and records.get(db, exp.id).status == "promoted"


def test_srm_mismatch_holds_the_experiment(db, reg):
    ab = ABTestManager(db, ABTestConfig(**FAST))
    exp = ab.deploy_challenger("v2", salt="test-salt")
    rows = [{"id": new_id(), "ts": now(), "user_id": f"u{i}", "version_id": "v1" if i % 5 else "v2",
             "experiment_id": exp.id, "arm": "control" if i % 5 else "treatment", "latency_ms": 100.0}
            for i in range(2000)]  # 80/20 where 50/50 was planned: a routing bug
    with db.begin() as conn:
        db.insert_ignore(conn, schema.interactions, rows)
    assert ab.auto_promote_if_ready() is False
    row = records.get(db, exp.id)
    assert row.status == "running" and row.decision["decision"] == "hold" and row.decision["srm"]["p_value"] < 1e-6
    assert "experiment_hold" in _audit_actions(db)


def test_manual_rollback_after_promotion_restores_champion(db, reg, traffic):
    ab = ABTestManager(db, ABTestConfig(**FAST))
    exp = ab.deploy_challenger("v2", salt="test-salt")
    traffic.run(1500, {"v1": 0.3, "v2": 0.6})
    assert ab.auto_promote_if_ready()
    assert ab.rollback() == "v1"
    assert reg.champion().id == "v1" and records.get(db, exp.id).status == "rolled_back"
    assert ab.route_request("u") == "v1"


def test_deploy_challenger_seed_flow_and_errors(db):
    ab = ABTestManager(db, ABTestConfig(initial_challenger_traffic=0.1))
    with pytest.raises(ConflictError, match="no champion"):
        ab.deploy_challenger("nayru-v2", model_path="models/nayru-v2.pth")
    with pytest.raises(NotFoundError):
        ab.route_request()
    ab.registry.register("nayru-v1", backend="local", model_path="models/nayru-v1.pth")
    ab.registry.promote("nayru-v1")
    exp = ab.deploy_challenger("nayru-v2", model_path="models/nayru-v2.pth", traffic_weight=0.1,
                               backend="local", base_model="tiny")
    assert exp.weights == {"control": 0.9, "treatment": 0.1}
    assert ab.registry.get("nayru-v2").model_path == "models/nayru-v2.pth"
    routed = [ab.route_request(f"user-{i}") for i in range(2000)]
    assert 0.07 < routed.count("nayru-v2") / 2000 < 0.13
    assert ab.route_request("user-7") == ab.route_request("user-7")
    with pytest.raises(ConflictError, match="already running"):
        ab.deploy_challenger("nayru-v3")
    with pytest.raises(ConflictError, match="model_path"):
        ABTestManager(db, scope="other").deploy_challenger("nayru-v2", model_path="elsewhere")


def test_start_experiment_validates(db, reg):
    with pytest.raises(ValidationError, match="different"):
        start_experiment(db, "v1", "v1")
    with pytest.raises(ValidationError, match="mode"):
        start_experiment(db, "v1", "v2", mode="split")
    with pytest.raises(ValidationError, match="traffic_weight"):
        start_experiment(db, "v1", "v2", traffic_weight=1.0)
    with pytest.raises(NotFoundError):
        start_experiment(db, "v1", "v9")


def test_config_validation_and_seed_json():
    seed = {"initial_challenger_traffic": 0.1, "min_improvement_threshold": 0.05, "enable_auto_promotion": True,
            "promotion_threshold": 0.05, "min_duration_hours": 48}
    cfg = ABTestConfig.from_dict(seed)
    assert cfg.min_duration_hours == 48 and cfg.rule == "sequential"
    assert ABTestConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown key"):
        ABTestConfig.from_dict({"traffic": 0.1})
    for bad in [dict(initial_challenger_traffic=1.5), dict(rule="vote"), dict(primary_metric="avg_latency_ms"),
                dict(metrics=["nope"]), dict(alpha=0.7), dict(canary_steps=[0.5, 0.1]),
                dict(guardrails={"max_p95_latency_ratio": 0.9}), dict(metrics=["reward"])]:
        with pytest.raises(ValidationError):
            ABTestConfig(**bad)


def test_seed_flow_with_the_capture_usage_logger(db_url):
    """Seed 002's A/B section end to end: UsageLogger -> ABTestManager -> promotion."""
    import numpy as np

    from tuneloop.capture import UsageLogger

    logger = UsageLogger(url=db_url)
    try:
        ab = ABTestManager(logger, ABTestConfig(initial_challenger_traffic=0.5, min_improvement_threshold=0.05,
                                                enable_auto_promotion=True, min_duration_hours=0,
                                                min_samples_per_version=100))
        ab.registry.register("nayru-v1", backend="scripted")
        ab.registry.promote("nayru-v1")
        exp = ab.deploy_challenger("nayru-v2", model_path="models/nayru-v2.pth", traffic_weight=0.5,
                                   backend="scripted")
        rng = np.random.default_rng(1)
        quality = {"nayru-v1": 0.35, "nayru-v2": 0.65}
        for i in range(1200):
            model = ab.route_request(f"user-{i}")
            arm = "treatment" if model == "nayru-v2" else "control"
            rid = logger.log(query="What is 65816 assembly?", response="...", model=model, latency_ms=150,
                             user_id=f"user-{i}", version_id=model, experiment_id=exp.id, arm=arm)
            logger.record_feedback(rid, feedback=1 if rng.random() < quality[model] else -1)
        logger.flush(timeout=30)
        comparison = ab.compare_models()
        assert comparison.winner == "nayru-v2" and comparison.improvement > 0.05
        assert ab.auto_promote_if_ready() is True
        assert ab.registry.champion().id == "nayru-v2"
    finally:
        logger.close()
