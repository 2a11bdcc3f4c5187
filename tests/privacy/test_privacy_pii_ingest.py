"""Ingestion-time PII policy (off / redact / keyed hash) and the guard against deleted users."""
from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tuneloop.capture.records import (dedupe_hash, feedback_row, interaction_row, write_rows)
from tuneloop.errors import ConfigError
from tuneloop.privacy.deletion import delete_user
from tuneloop.privacy.pii import Scrubber, scrub
from tuneloop.privacy.pii_ingest import HashingScrubber, IngestGuard, PiiPolicy, policy_from_settings
from tuneloop.store import schema

from .conftest import count

KEY = "k" * 32
TEXT = ("mail Bob@Example.com or call +1 415-555-0100, card 4111 1111 1111 1111, "
        "iban DE89 3704 0044 0532 0130 00, host 10.0.0.7 and 2001:db8::1, api_key=hunter2hunter2")


def _row(**kw):
    return interaction_row(query=TEXT, response="sure, bob@example.com",
                           messages=[{"role": "user", "content": [{"type": "text", "text": TEXT}]}],
                           metadata={"contact": "bob@example.com", "n": 3}, user_id="u1", **kw)


def test_off_stores_text_as_sent():
    row = _row()
    assert PiiPolicy("off").apply_interaction(row) == row


def test_redact_replaces_every_text_field_and_recomputes_the_dedupe_hash():
    out = PiiPolicy("redact").apply_interaction(_row())
    assert out["query"] == scrub(TEXT).text
    assert out["response"] == "sure, [EMAIL]"
    assert out["messages"][0]["content"][0]["text"] == scrub(TEXT).text
    assert out["meta"]["contact"] == "[EMAIL]" and out["meta"]["n"] == 3
    # query and messages hold TEXT each; one email more in the response and in the metadata
    assert out["meta"]["pii"] == {"mode": "redact", "counts": {
        "secret": 2, "email": 4, "ip": 4, "iban": 2, "card": 2, "phone": 2}}
    assert out["dedupe_hash"] == dedupe_hash(out["query"], out["response"])
    assert out["user_id"] == "u1"


def test_hash_is_keyed_deterministic_and_normalized():
    a, b = PiiPolicy("hash", key=KEY), PiiPolicy("hash", key="another key, 16+ chars")
    qa = a.apply_interaction(_row())["query"]
    assert "Bob@Example.com" not in qa and "4111" not in qa and "hunter2" not in qa
    tokens = re.findall(r"\[(\w+):([0-9a-f]{12})\]", qa)
    assert [k for k, _ in tokens] == ["EMAIL", "PHONE", "CARD", "IBAN", "IP", "IP", "SECRET"]
    # same value, any spelling: same token; another key: another token
    assert a.apply_interaction(_row())["query"] == qa
    assert a.apply_interaction(_row())["response"].endswith(dict(tokens)["EMAIL"] + "]")
    assert b.apply_interaction(_row())["query"] != qa


def test_feedback_text_and_meta():
    fb = feedback_row("i1", kind="comment", text="reach me at 415-555-0100 please", meta={"e": "a@b.io"})
    out = PiiPolicy("redact").apply_feedback(fb)
    assert out["text"] == "reach me at [PHONE] please" and out["meta"]["e"] == "[EMAIL]"


def test_hash_mode_needs_a_key_and_never_shows_it(monkeypatch):
    monkeypatch.delenv("TUNELOOP_PII_HASH_KEY", raising=False)
    with pytest.raises(ConfigError, match="key"):
        PiiPolicy("hash")
    with pytest.raises(ConfigError, match="key"):
        PiiPolicy("hash", key="short")
    with pytest.raises(ConfigError, match="pii_mode"):
        PiiPolicy("encrypt")
    monkeypatch.setenv("TUNELOOP_PII_HASH_KEY", KEY)
    p = policy_from_settings(env={"TUNELOOP_PII_MODE": "hash", "TUNELOOP_PII_HASH_KEY": KEY})
    assert p.mode == "hash" and KEY not in repr(p) and KEY not in repr(vars(p))
    assert policy_from_settings(env={}).mode == "off"


_PII = st.sampled_from(["bob@example.com", "+1 415-555-0100", "4111 1111 1111 1111", "10.1.2.3",
                        "DE89 3704 0044 0532 0130 00", "fe80::1", "sk-proj-AbCdEfGhIjKlMnOpQrStUv123456",
                        "token=abcdefgh1234", "415-555-0100", "2024-05-01", "order 1234567812345678"])
_WORDS = st.text(alphabet=st.characters(codec="utf-8", categories=("L", "N", "P", "Zs")), max_size=20)


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(_PII, _WORDS), max_size=8).map(" ".join))
def test_hashing_scrubber_finds_exactly_what_the_scrubber_finds(text):
    plain = Scrubber().scrub(text)
    hashed = HashingScrubber(KEY.encode()).scrub(text)
    assert hashed.counts == plain.counts
    assert re.sub(r"\[([A-Z]+):[0-9a-f]{12}\]", r"[\1]", hashed.text) == plain.text


def _guarded_write(db, guard, table, rows):
    with db.begin() as conn:
        kept = guard.apply(conn, table, rows)
        return write_rows(db, conn, table, kept)


def test_guard_drops_rows_of_deleted_users_and_feedback_on_them(db):
    delete_user(db, "gone", actor="t")
    guard = IngestGuard(PiiPolicy("redact"))
    rows = [interaction_row(query="hi a@b.io", response="x", user_id=u) for u in ("gone", "here", None, "gone")]
    assert _guarded_write(db, guard, "interactions", rows) == 2
    assert guard.dropped == 2
    fb = [feedback_row(rows[0]["id"], kind="thumbs", value=1), feedback_row(rows[1]["id"], kind="thumbs", value=1),
          feedback_row(rows[1]["id"], kind="thumbs", value=1, user_id="gone")]
    assert _guarded_write(db, guard, "feedback", fb) == 1
    assert count(db, schema.interactions, schema.interactions.c.user_id == "gone") == 0
    stored = db.fetch_all(schema.interactions.select())
    assert {r["query"] for r in stored} == {"hi [EMAIL]"}


def test_default_guard_comes_from_the_environment_and_configure_replaces_it(monkeypatch):
    from tuneloop.privacy import pii_ingest

    monkeypatch.setattr(pii_ingest, "_GUARD", None)
    monkeypatch.setenv("TUNELOOP_PII_MODE", "redact")
    assert pii_ingest.default_guard().policy.mode == "redact"
    assert pii_ingest.default_guard() is pii_ingest.default_guard()

    class S:
        pii_mode, pii_hash_key = "hash", KEY

    assert pii_ingest.configure(S()).policy.mode == "hash" and pii_ingest.default_guard().policy.mode == "hash"
    monkeypatch.setattr(pii_ingest, "_GUARD", None)
