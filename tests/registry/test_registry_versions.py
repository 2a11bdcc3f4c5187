"""Registry on the backend under test (SQLite or PostgreSQL): versions, aliases, promotion, rollback, audit."""
from __future__ import annotations

import sqlalchemy as sa
import pytest

from tuneloop.errors import ConflictError, NotFoundError, ValidationError
from tuneloop.registry import Registry, alias_for
from tuneloop.store import schema


@pytest.fixture
def reg(db):
    return Registry(db, actor="tester")


def _audit(db, action=None):
    stmt = sa.select(schema.audit_log).order_by(schema.audit_log.c.id)
    if action:
        stmt = stmt.where(schema.audit_log.c.action == action)
    return db.fetch_all(stmt)


def test_register_get_list_with_lineage(reg, db):
    v1 = reg.register("v1", backend="scripted", base_model="tiny", params={"temperature": 0.0})
    v2 = reg.register("v2", backend="local", base_model="tiny", adapter_path="/a/v2", parent_id="v1",
                      dataset_id="ds-1", train_run_id="run-1", metrics={"loss": 0.3},
                      lineage={"dataset_hash": "abc", "config": {"r": 16}}, prompt={"system": "Be brief."})
    got = reg.get("v2")
    assert got == v2 and got.parent_id == "v1" and got.lineage["config"] == {"r": 16}
    assert got.prompt == {"system": "Be brief."} and got.status == "candidate" and not got.tainted
    assert [v.id for v in reg.list()] == ["v2", "v1"]
    assert [v.id for v in reg.list(status="candidate", kind="generator")] == ["v2", "v1"]
    assert reg.register(backend="openai").id != v1.id  # generated UUIDv7
    assert [r["target"] for r in _audit(db, "register")][:2] == ["version:v1", "version:v2"]


def test_register_rejects_bad_input(reg):
    reg.register("v1", backend="scripted")
    with pytest.raises(ConflictError, match="already registered"):
        reg.register("v1")
    with pytest.raises(ValidationError, match="kind"):
        reg.register("v9", kind="llm")
    with pytest.raises(ValidationError, match="alias name"):
        reg.register("champion")
    with pytest.raises(ValidationError, match="version id"):
        reg.register("has space")
    with pytest.raises(NotFoundError, match="parent"):
        reg.register("v3", parent_id="nope")
    with pytest.raises(NotFoundError, match="'nope'"):
        reg.get("nope")


def test_promote_archives_old_champion_and_rollback_restores(reg, db):
    for vid in ("v1", "v2", "v3"):
        reg.register(vid, backend="scripted")
    reg.promote("v1")
    reg.set_alias("challenger", "v2")
    reg.promote("v2", reason="won experiment")
    assert reg.champion().id == "v2" and reg.get("v1").status == "archived"
    assert reg.get("v2").status == "active"
    assert reg.alias("challenger") is None  # the challenger became champion
    assert reg.alias("champion").previous_version_id == "v1"
    reg.promote("v3")
    assert reg.rollback(reason="bad latency").id == "v2"
    assert reg.get("v3").status == "rejected" and reg.get("v2").status == "active"
    assert reg.rollback().id == "v1"  # repeated rollback walks back through history
    with pytest.raises(ConflictError, match="no previous"):
        reg.rollback()
    rollbacks = _audit(db, "rollback")
    assert [(r["before"]["champion"], r["after"]["champion"]) for r in rollbacks] == [("v3", "v2"), ("v2", "v1")]
    assert rollbacks[0]["actor"] == "tester" and rollbacks[0]["after"]["reason"] == "bad latency"


def test_promote_again_after_rollback_then_rollback(reg):
    for vid in ("a", "b", "c"):
        reg.register(vid, backend="scripted")
    reg.promote("a")
    reg.promote("b")
    reg.rollback()
    reg.promote("c")
    assert reg.rollback().id == "a"


def test_aliases_keep_previous_and_are_audited(reg, db):
    reg.register("v1", backend="scripted")
    reg.register("v2", backend="scripted")
    reg.set_alias("shadow", "v1")
    a = reg.set_alias("shadow", "v2")
    assert (a.version_id, a.previous_version_id) == ("v2", "v1")
    assert reg.get_alias("shadow").id == "v2" and reg.resolve("shadow").id == "v2"
    assert reg.get_alias("challenger") is None
    reg.delete_alias("shadow")
    assert reg.alias("shadow") is None
    with pytest.raises(NotFoundError):
        reg.delete_alias("shadow")
    with pytest.raises(NotFoundError):
        reg.set_alias("challenger", "missing")
    actions = [r["action"] for r in _audit(db) if r["target"] == "alias:shadow"]
    assert actions == ["set_alias", "set_alias", "delete_alias"]


def test_archive_taint_and_kinds(reg):
    reg.register("r1", kind="retriever", backend="local")
    reg.register("r2", kind="retriever", backend="local")
    reg.promote("r1")
    assert reg.champion("retriever").id == "r1" and reg.champion() is None
    assert reg.alias(alias_for("champion", "retriever")).version_id == "r1"
    with pytest.raises(ConflictError, match="champion"):
        reg.archive("r1")
    reg.set_alias(alias_for("challenger", "retriever"), "r2")
    reg.mark_tainted("r2", reason="deleted user data")
    with pytest.raises(ConflictError, match="tainted"):
        reg.promote("r2")
    assert reg.archive("r2").status == "archived"
    assert reg.alias("retriever:challenger") is None


def test_rollback_refuses_tainted_previous(reg):
    reg.register("v1", backend="scripted")
    reg.register("v2", backend="scripted")
    reg.promote("v1")
    reg.promote("v2")
    reg.mark_tainted("v1")
    with pytest.raises(ConflictError, match="tainted"):
        reg.rollback()
    assert reg.rollback(allow_tainted=True).id == "v1"


def test_update_metrics_merges(reg):
    reg.register("v1", backend="scripted", metrics={"loss": 0.5})
    assert reg.update_metrics("v1", {"pass_rate": 0.9}).metrics == {"loss": 0.5, "pass_rate": 0.9}


def test_json_columns_survive_nan(reg):
    reg.register("v1", backend="scripted", metrics={"loss": float("nan"), "acc": 0.5})
    assert reg.get("v1").metrics == {"loss": None, "acc": 0.5}  # JSONB has no NaN
