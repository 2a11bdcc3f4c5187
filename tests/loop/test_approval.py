"""Approval mode on the real stages, store and A/B manager (scripted versions: no model needed)."""
import pytest
import sqlalchemy as sa

from tuneloop.errors import ConflictError, ValidationError
from tuneloop.loop.approval import approve_run
from tuneloop.loop.config import LoopConfig
from tuneloop.loop.cycle import CycleRunner
from tuneloop.loop.stages import DefaultStages
from tuneloop.registry.versions import Registry
from tuneloop.store import schema


def _gated_run(db, tmp_path, require_approval=True):
    reg = Registry(db)
    reg.register("v0", backend="scripted", params={"script": {"default": "a"}})
    reg.promote("v0")
    reg.register("v1", backend="scripted", params={"script": {"default": "b"}})
    cfg = LoopConfig(db_url=str(db.engine.url), output_dir=str(tmp_path), require_approval=require_approval,
                     ab_test_config={"min_duration_hours": 0})
    runner = CycleRunner(db, DefaultStages(db, cfg))
    run_id = runner.start(None, "test")
    with db.begin() as conn:
        conn.execute(schema.loop_runs.update().values(state="gated", version_id="v1",
                                                      details={"gate": {"passed": True, "pass_rate": 0.9}}))
    return runner, run_id


def _experiments(db):
    return db.fetch_all(sa.select(schema.experiments))


def test_cycle_waits_for_approval_and_no_traffic_reaches_the_challenger(db, tmp_path):
    runner, run_id = _gated_run(db, tmp_path)
    assert runner.advance(run_id) == "awaiting_approval"
    assert runner.advance(run_id) == "awaiting_approval"  # still waiting, however often asked
    assert _experiments(db) == []
    assert Registry(db).champion().id == "v0"
    with pytest.raises(ValidationError):
        approve_run(db, run_id, actor="alice", approve=True, reason=" ")
    approve_run(db, run_id, actor="alice", approve=True, reason="gate +9 points, data reviewed")
    assert runner.advance(run_id) == "experimenting"
    assert len(_experiments(db)) == 1
    audit = db.fetch_all(sa.select(schema.audit_log).where(schema.audit_log.c.action == "loop_approve"))
    assert audit and audit[0]["actor"] == "alice" and audit[0]["after"]["evidence"]["gate"]["pass_rate"] == 0.9
    with pytest.raises(ConflictError):
        approve_run(db, run_id, actor="alice", approve=True, reason="again")


def test_rejected_cycle_never_serves(db, tmp_path):
    runner, run_id = _gated_run(db, tmp_path)
    runner.advance(run_id)
    approve_run(db, run_id, actor="bob", approve=False, reason="training data not reviewed")
    assert runner.advance(run_id) == "rejected"
    assert _experiments(db) == []
    assert Registry(db).get("v1").status == "rejected"


def test_without_approval_mode_the_cycle_goes_straight_online(db, tmp_path):
    runner, run_id = _gated_run(db, tmp_path, require_approval=False)
    assert runner.advance(run_id) == "experimenting"
