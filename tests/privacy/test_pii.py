"""PII scrubbing: every kind, with counts; checksums keep lookalikes; clean text stays."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tuneloop.errors import ValidationError
from tuneloop.privacy.pii import Scrubber, iban_valid, luhn_valid, scrub


@pytest.mark.parametrize("text, kind", [
    ("write to jane.doe+tag@mail.example.co.uk today", "email"),
    ("call +1 (415) 555-0100 now", "phone"),
    ("call 415-555-0100 now", "phone"),
    ("ring +44 20 7946 0958", "phone"),
    ("ring +447911123456", "phone"),
    ("visa 4111 1111 1111 1111 ok", "card"),
    ("amex 378282246310005 ok", "card"),
    ("mc 5555-5555-5555-4444.", "card"),
    ("iban DE89 3704 0044 0532 0130 00 ok", "iban"),
    ("iban GB82WEST12345698765432 ok", "iban"),
    ("host 192.168.1.20 is down", "ip"),
    ("host 2001:db8:85a3::8a2e:370:7334 is down", "ip"),
    ("loopback ::1 and fe80::1", "ip"),
    ("key sk-proj-AbCdEfGhIjKlMnOpQrStUv123456", "secret"),
    ("aws AKIAIOSFODNN7EXAMPLE here", "secret"),
    ("gh token ghp_0123456789abcdefghijklmnopqrstuvwxyzAB", "secret"),
    ("Authorization: Bearer abc.def-ghi_jkl012345678", "secret"),
    ("config password=hunter2hunter2", "secret"),
    ("sha 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "secret"),
    ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U", "secret"),
])
def test_each_kind_is_scrubbed_and_counted(text, kind):
    r = scrub(text)
    assert r.counts.get(kind, 0) >= 1, (text, r)
    assert f"[{kind.upper()}]" in r.text


def test_counts_per_kind():
    text = ("a@b.io and c@d.io, card 4111111111111111, server 10.0.0.1, "
            "call +33 1 42 68 53 00, key AKIAIOSFODNN7EXAMPLE")
    r = scrub(text)
    assert r.counts == {"email": 2, "card": 1, "ip": 1, "phone": 1, "secret": 1}
    assert r.total == 6
    assert "a@b.io" not in r.text and "4111111111111111" not in r.text


def test_checksums_keep_lookalikes():
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert iban_valid("DE89370400440532013000") and not iban_valid("DE00370400440532013000")
    r = scrub("order 4111111111111112 and ref DE00370400440532013000")
    assert r.counts == {} and r.text == "order 4111111111111112 and ref DE00370400440532013000"


@pytest.mark.parametrize("text", [
    "The meeting is on 2024-05-01 at 10:30:00.",
    "Version 2.0 costs $1,299.99 and weighs 3.5 kg.",
    "What is 12 + 35? The answer is 47.",
    "Pi is about 3.14159265358979.",
    "The year 1969 had 365 days; Asia is big; a keyboard has 104 keys.",
    "Use the token bucket algorithm for rate limiting.",
])
def test_ordinary_text_is_left_alone(text):
    r = scrub(text)
    assert r.counts == {} and r.text == text


def test_scrubber_kinds_and_replacements():
    s = Scrubber(kinds=["email"], replacements={"email": "<EMAIL>"})
    r = s.scrub("mail a@b.io card 4111111111111111")
    assert r.text == "mail <EMAIL> card 4111111111111111" and r.counts == {"email": 1}
    with pytest.raises(ValidationError, match="unknown PII kinds"):
        Scrubber(kinds=["ssn"])
    assert scrub("").text == "" and scrub("").counts == {}


_PII = st.sampled_from(["bob@example.com", "4111 1111 1111 1111", "+1 415-555-0100", "10.1.2.3",
                        "DE89 3704 0044 0532 0130 00", "AKIAIOSFODNN7EXAMPLE"])
_WORDS = st.lists(st.sampled_from(["the", "model", "answer", "is", "good", "and", "fast", "hello,", "world."]),
                  min_size=0, max_size=8).map(" ".join)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(_WORDS, _PII), min_size=1, max_size=4), _WORDS)
def test_planted_pii_never_survives_and_scrubbing_is_idempotent(parts, tail):
    text = " ".join(f"{w} {p}" for w, p in parts) + " " + tail
    r = scrub(text)
    for _, p in parts:
        assert p not in r.text
    assert r.total == len(parts)
    assert scrub(r.text).total == 0
