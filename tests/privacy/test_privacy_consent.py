"""Consent per user: stored in subjects, audited, honoured by the dataset builders."""
from __future__ import annotations

import pytest

from tuneloop.errors import ValidationError
from tuneloop.privacy.audit import list_audit
from tuneloop.privacy.consent import (deleted_users, get_subject, has_training_consent, is_deleted,
                                      set_consent)

from .conftest import add_traffic, build_snapshot


def test_default_is_consent_given_and_not_deleted(db):
    s = get_subject(db, "nobody")
    assert (s.consent_training, s.deleted, s.created_at) == (True, False, None)
    assert has_training_consent(db, "nobody") and has_training_consent(db, None)
    assert not is_deleted(db, "nobody") and not is_deleted(db, None)


def test_withdraw_and_grant_are_audited_with_before_and_after(db, tmp_path):
    add_traffic(db, "u1", 2)
    snap = build_snapshot(db, tmp_path / "s.jsonl")
    s = set_consent(db, "u1", training=False, actor="key:admin/1")
    assert not s.consent_training and not has_training_consent(db, "u1")
    set_consent(db, "u1", training=True, actor="cli:bo")
    entries = list_audit(db, action="user.consent")
    assert [(e.actor, e.before, e.after.get("consent_training")) for e in entries] == [
        ("cli:bo", {"consent_training": False}, True),
        ("key:admin/1", {"consent_training": True}, False)]
    # the withdrawal names the snapshots built before it, for the operator to decide on
    assert entries[1].after["snapshots_before"] == [snap.dataset_id]
    assert get_subject(db, "u1").created_at <= get_subject(db, "u1").updated_at


def test_users_without_training_consent_never_enter_a_dataset(db, tmp_path):
    add_traffic(db, "yes", 3)
    add_traffic(db, "no", 3)
    add_traffic(db, "row-says-no", 2, consent=False)
    set_consent(db, "no", training=False, actor="t")
    result = build_snapshot(db, tmp_path / "d.jsonl")
    text = open(result.path).read()
    assert result.final_count == 3 and " yes " in text
    assert " no " not in text and "row-says-no" not in text


def test_deleted_users_checks_many_ids_at_once(db):
    from tuneloop.privacy.deletion import delete_user

    for u in ("a", "b"):
        delete_user(db, u, actor="t")
    ids = [f"user{i}" for i in range(1200)] + ["a", "b", None]
    assert deleted_users(db, ids) == {"a", "b"}
    with db.begin() as conn:
        assert deleted_users(conn, ["b", "c"]) == {"b"}
    assert deleted_users(db, []) == set()


@pytest.mark.parametrize("training", [None, "yes", 1])
def test_consent_must_be_a_bool(db, training):
    with pytest.raises(ValidationError, match="training"):
        set_consent(db, "u", training=training, actor="t")
