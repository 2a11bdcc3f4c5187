"""Right to delete: rows gone, tombstone left, lineage tainted, one transaction, audited."""
from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from tuneloop.errors import ConflictError, ValidationError
from tuneloop.privacy.audit import list_audit
from tuneloop.privacy.consent import get_subject, is_deleted, set_consent
from tuneloop.privacy.deletion import delete_user, purge_subject_rows, tainted_versions_of
from tuneloop.registry.versions import Registry
from tuneloop.store import schema

from .conftest import add_traffic, count

IT, FB, AN, GE = schema.interactions, schema.feedback, schema.annotations, schema.golden_examples


def _register(db, world):
    reg = Registry(db, actor="loop")
    reg.register("v1", backend="scripted", dataset_id=world.d_both, model_path="/models/v1")
    reg.register("v2", backend="scripted", dataset_id=world.d_clean)
    reg.register("v3", backend="scripted", base_model="/models/v1", dataset_id=world.d_clean)  # on v1's weights
    reg.register("v4", backend="scripted", lineage={"datasets": {"dpo": {"id": world.d_both, "rows": 3}}})
    reg.promote("v1")
    return reg


def test_delete_user_removes_rows_taints_lineage_and_leaves_tombstone(db, world):
    reg = _register(db, world)
    report = delete_user(db, "u1", actor="cli:ana")

    assert count(db, IT, IT.c.user_id == "u1") == 0
    assert count(db, IT, IT.c.user_id == "u2") == 3                          # others untouched
    assert count(db, FB, FB.c.interaction_id.in_(world.ids["u1"])) == 0      # feedback on u1's answers
    assert count(db, FB, FB.c.user_id == "u1") == 0                           # feedback u1 gave elsewhere
    assert count(db, FB) == 1                                                 # u2's own thumbs stays
    assert count(db, AN) == 1 and count(db, GE) == 1                          # u1's annotation and proposal gone
    assert count(db, schema.retrieval_logs) == 1                              # u1's retrieval log gone
    assert (report.interactions, report.feedback, report.annotations, report.golden_examples,
            report.retrieval_logs) == (3, 3, 1, 1, 1)

    tainted = {r["id"]: r["tainted"] for r in db.fetch_all(sa.select(schema.datasets.c.id, schema.datasets.c.tainted))}
    assert tainted == {world.d_both: True, world.d_clean: False}
    assert set(report.tainted_datasets) == {world.d_both}
    assert set(report.tainted_versions) == {"v1", "v3", "v4"}
    assert [reg.get(v).tainted for v in ("v1", "v2", "v3", "v4")] == [True, False, True, True]
    assert report.champion_tainted == ("champion=v1",)
    # the registry's own history shows why
    hist = reg.history("version:v1")
    assert hist[0]["action"] == "mark_tainted" and report.deletion_id in hist[0]["after"]["reason"]

    subject = get_subject(db, "u1")
    assert subject.deleted and not subject.consent_training and is_deleted(db, "u1")
    row = db.fetch_one(sa.select(schema.subjects).where(schema.subjects.c.user_id == "u1"))
    assert set(k for k, v in row.items() if v is not None) == {"user_id", "consent_training", "deleted_at",
                                                               "created_at", "updated_at"}
    # the membership (ids only) stays as lineage; the dataset row says it is tainted
    assert count(db, schema.dataset_members, schema.dataset_members.c.dataset_id == world.d_both) == 6


def test_deletion_is_audited_without_the_users_text(db, world):
    delete_user(db, "u1", actor="key:ops/123")
    [entry] = list_audit(db, action="user.delete")
    assert (entry.actor, entry.target) == ("key:ops/123", "user:u1")
    assert entry.before == {"consent_training": True, "deleted_at": None}
    assert entry.after["interactions"] == 3 and entry.after["tainted_datasets"] == [world.d_both]
    dumped = json.dumps([e.to_dict() for e in list_audit(db, limit=1000)])
    assert "u1@example.com" not in dumped and "weather" not in dumped
    assert {e.action for e in list_audit(db, action="dataset.")} == {"dataset.taint"}


def test_deletion_is_one_transaction(db, world):
    # An empty actor fails inside the transaction (first audit row): nothing may change.
    with pytest.raises(ValidationError):
        delete_user(db, "u1", actor="")
    assert count(db, IT, IT.c.user_id == "u1") == 3
    assert count(db, FB) == 4
    assert not db.scalar(sa.select(schema.datasets.c.tainted).where(schema.datasets.c.id == world.d_both))
    assert not is_deleted(db, "u1")


def test_deleting_again_sweeps_late_rows(db, world):
    delete_user(db, "u1", actor="t")
    # A row that slipped in (e.g. written by a client that bypasses the ingestion guard)
    add_traffic(db, "u1", 2, guarded=False)
    again = delete_user(db, "u1", actor="t")
    assert again.already_deleted and again.interactions == 2
    assert count(db, IT, IT.c.user_id == "u1") == 0
    first = db.fetch_one(sa.select(schema.subjects.c.deleted_at).where(schema.subjects.c.user_id == "u1"))
    assert first["deleted_at"] <= again.deleted_at  # the original deletion time is kept


def test_purge_subject_rows_removes_rows_of_every_tombstoned_user(db, world):
    delete_user(db, "u1", actor="t")
    add_traffic(db, "u1", 2, guarded=False)
    add_traffic(db, "u3", 1)
    assert purge_subject_rows(db, actor="retention") == 2
    assert count(db, IT, IT.c.user_id == "u1") == 0 and count(db, IT, IT.c.user_id == "u3") == 1
    assert list_audit(db, action="user.purge_late_rows")[0].after["interactions"] == 2


def test_deleted_user_cannot_consent_again_and_is_not_in_new_snapshots(db, world, tmp_path):
    delete_user(db, "u1", actor="t")
    with pytest.raises(ConflictError):
        set_consent(db, "u1", training=True, actor="t")
    from .conftest import build_snapshot

    add_traffic(db, "u1", 1)  # late row, not yet swept: the builder must still leave it out
    result = build_snapshot(db, tmp_path / "after.jsonl")
    text = open(result.path).read()
    assert "u1" not in text and result.final_count == 3


def test_delete_unknown_user_leaves_a_tombstone(db):
    r = delete_user(db, "never-seen", actor="t")
    assert r.interactions == 0 and not r.already_deleted and is_deleted(db, "never-seen")


def test_purge_files_removes_snapshot_files(db, world):
    import os

    assert os.path.exists(world.path_both)
    r = delete_user(db, "u1", actor="t", purge_files=True)
    assert world.path_both in r.purged_files and not os.path.exists(world.path_both)
    assert list_audit(db, action="dataset.purge_files")[0].after["removed"] == [world.path_both]


@pytest.mark.parametrize("bad", ["", " ", "x" * 256, None, 5])
def test_bad_user_ids_are_refused(db, bad):
    with pytest.raises(ValidationError):
        delete_user(db, bad, actor="t")


def test_tainted_versions_of_follows_weights_not_parents():
    rows = [{"id": "a", "dataset_id": "d1", "adapter_path": "/a"},
            {"id": "b", "dataset_id": "d2", "base_model": "/a"},          # on a's adapter
            {"id": "c", "dataset_id": "d2", "base_model": "b"},           # on b by id
            {"id": "d", "dataset_id": "d2", "parent_id": "a"},            # replaced a; fresh weights
            {"id": "e", "lineage": {"datasets": ["d1"]}},
            {"id": "f", "lineage": "not a mapping"}]
    assert tainted_versions_of(rows, {"d1"}) == {"a", "b", "c", "e"}
    assert tainted_versions_of(rows, set()) == set()
