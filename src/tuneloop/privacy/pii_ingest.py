"""What happens to PII when rows are stored, and rows of deleted users at the door.

    off      store text as sent (the default; dataset builds still scrub PII)
    redact   replace PII with ``[EMAIL]``, ``[PHONE]``, ... before anything is stored
    hash     replace PII with a keyed hash, ``[EMAIL:ef585030d32e]``: the same value gives the
             same token (so "same customer email" stays countable), and without the key
             the value cannot be recovered or confirmed by guessing

>>> policy = PiiPolicy("hash", key="correct horse battery staple")
>>> row = {"query": "mail bob@example.com", "response": "ok", "messages": None, "meta": None}
>>> policy.apply_interaction(row)["query"]
'mail [EMAIL:ef585030d32e]'
>>> PiiPolicy("redact").apply_interaction(row)["query"]
'mail [EMAIL]'

Scrubbed: ``query``, ``response``, every message's text, ``error`` and string values in
``metadata`` of interactions; ``text`` and ``metadata`` of feedback. Identifiers
(``user_id``, ``session_id``) stay: consent and deletion are keyed on them. The
``dedupe_hash`` is recomputed from the scrubbed text (an unsalted hash of the raw text
would let anyone confirm a guessed email), and ``metadata.pii`` records what was replaced.

:class:`IngestGuard` is what the writers call inside their write transaction: it drops
rows of deleted users (and feedback on interactions it dropped), then applies the policy.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tuneloop.errors import ConfigError
from tuneloop.privacy import pii as _pii
from tuneloop.privacy.consent import deleted_users
from tuneloop.privacy.pii import PII_KINDS, Scrubber

__all__ = ["MODES", "PiiPolicy", "HashingScrubber", "IngestGuard", "policy_from_settings", "default_guard",
           "configure", "MODE_ENV", "KEY_ENV"]

MODES = ("off", "redact", "hash")
MODE_ENV, KEY_ENV = "TUNELOOP_PII_MODE", "TUNELOOP_PII_HASH_KEY"
_MIN_KEY = 16
_TOKEN_HEX = 12  # 48 bits: collisions among one deployment's values are negligible
_NON_DIGIT = re.compile(r"[^\d+]")


def _normal(kind: str, value: str) -> str:
    """One spelling per value, so ``Bob@X.com`` and ``bob@x.com`` hash alike."""
    if kind in ("card", "phone", "iban"):
        return _NON_DIGIT.sub("", value.upper()) if kind != "iban" else value.replace(" ", "").upper()
    return value.lower() if kind in ("email", "ip") else value


class HashingScrubber(Scrubber):
    """A :class:`~tuneloop.privacy.pii.Scrubber` whose replacements are keyed hashes.

    The detection is the parent's (same patterns, gates and checksums); only the
    replacement sees the matched value, which the parent's API does not pass on.

    >>> s = HashingScrubber(b"k" * 16)
    >>> s.scrub("a@b.co and A@B.CO").text.split(" and ")[0] == s.scrub("A@b.co").text
    True
    """

    def __init__(self, key: bytes, kinds: Iterable[str] | None = None) -> None:
        super().__init__(kinds)
        self._key = key

    def token(self, kind: str, value: str) -> str:
        digest = hmac.new(self._key, f"{kind}:{_normal(kind, value)}".encode("utf-8", "surrogatepass"),
                          hashlib.sha256).hexdigest()
        return f"[{kind.upper()}:{digest[:_TOKEN_HEX]}]"

    def _replace(self, kind: str, value: str, counts: dict[str, int]) -> str:
        # Detection (patterns, gates, checksums) is the parent's; only the token differs.
        counts[kind] = counts.get(kind, 0) + 1
        return self.token(kind, value)


def _scrub_value(value: Any, scrubber: Scrubber, counts: dict[str, int]) -> Any:
    """Strings scrubbed, containers walked, anything else as is."""
    if isinstance(value, str):
        r = scrubber.scrub(value)
        if r.counts:
            _pii.merge_counts(counts, r.counts)
            return r.text
        return value
    if isinstance(value, Mapping):
        return {k: _scrub_value(v, scrubber, counts) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub_value(v, scrubber, counts) for v in value]
    return value


class PiiPolicy:
    """The ingestion-time PII mode (``off`` | ``redact`` | ``hash``) and its scrubber.

    ``key`` (hash mode, at least 16 characters) defaults to ``$TUNELOOP_PII_HASH_KEY``;
    it is never logged or stored. ``kinds`` limits which PII kinds are replaced.
    """

    def __init__(self, mode: str = "off", *, key: str | bytes | None = None, kinds: Sequence[str] | None = None) -> None:
        if mode not in MODES:
            raise ConfigError(f"pii_mode: must be one of {', '.join(MODES)}, got {mode!r}")
        self.mode = mode
        self.scrubber: Scrubber | None = None
        if mode == "redact":
            self.scrubber = Scrubber(kinds)
        elif mode == "hash":
            raw = key if key is not None else os.environ.get(KEY_ENV)
            if not raw or len(raw) < _MIN_KEY:
                raise ConfigError(f"pii_mode 'hash' needs a secret key of at least {_MIN_KEY} characters "
                                  f"(pii_hash_key or ${KEY_ENV})")
            self.scrubber = HashingScrubber(raw.encode() if isinstance(raw, str) else bytes(raw), kinds)

    def __repr__(self) -> str:  # never the key
        return f"PiiPolicy({self.mode!r})"

    @property
    def active(self) -> bool:
        return self.scrubber is not None

    def _mark(self, row: dict[str, Any], counts: dict[str, int]) -> None:
        if counts:
            meta = dict(row.get("meta") or {})
            meta["pii"] = {"mode": self.mode, "counts": counts}
            row["meta"] = meta

    def apply_interaction(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of an interaction row with PII replaced (the row itself when off)."""
        if self.scrubber is None:
            return dict(row)
        out, counts = dict(row), {}
        for col in ("query", "response", "error", "messages", "meta"):
            if out.get(col) is not None:
                out[col] = _scrub_value(out[col], self.scrubber, counts)
        if counts:
            if out.get("dedupe_hash") is not None:
                from tuneloop.capture.records import dedupe_hash

                out["dedupe_hash"] = dedupe_hash(out.get("query") or "", out.get("response") or "")
            self._mark(out, counts)
        return out

    def apply_feedback(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of a feedback row with PII replaced in ``text`` and ``meta``."""
        if self.scrubber is None:
            return dict(row)
        out, counts = dict(row), {}
        for col in ("text", "meta"):
            if out.get(col) is not None:
                out[col] = _scrub_value(out[col], self.scrubber, counts)
        self._mark(out, counts)
        return out


def policy_from_settings(settings: Any = None, env: Mapping[str, str] | None = None) -> PiiPolicy:
    """The policy of ``settings.pii_mode``/``pii_hash_key`` or ``$TUNELOOP_PII_MODE``/``_HASH_KEY``."""
    env = os.environ if env is None else env
    mode = getattr(settings, "pii_mode", None) or env.get(MODE_ENV) or "off"
    key = getattr(settings, "pii_hash_key", None) or env.get(KEY_ENV)
    if hasattr(key, "get_secret_value"):  # a pydantic SecretStr setting
        key = key.get_secret_value()
    kinds = getattr(settings, "pii_kinds", None)
    return PiiPolicy(str(mode).lower(), key=key, kinds=kinds or PII_KINDS)


class IngestGuard:
    """Applied by the writers to each batch, inside the write transaction.

    >>> guard = IngestGuard(PiiPolicy("redact"))
    >>> # rows = guard.apply(conn, "interactions", rows)  -> deleted users' rows dropped, PII redacted

    ``dropped`` counts rows refused because their user was deleted. Interactions it drops
    are remembered (the last ``remember`` ids) so feedback on them, arriving in the same
    batch or later, is dropped too.
    """

    def __init__(self, policy: PiiPolicy | None = None, *, remember: int = 100_000) -> None:
        self.policy = policy or PiiPolicy("off")
        self.dropped = 0
        self._remember = remember
        self._gone: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def _forget_old(self) -> None:
        while len(self._gone) > self._remember:
            self._gone.popitem(last=False)

    def apply(self, conn: Any, table: str, rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """``rows`` without those of deleted users, with the PII policy applied."""
        if not rows:
            return []
        dead = deleted_users(conn, (r.get("user_id") for r in rows))
        keep = []
        with self._lock:
            for r in rows:
                if r.get("user_id") in dead or (table == "feedback" and r.get("interaction_id") in self._gone):
                    self.dropped += 1
                    if table == "interactions":
                        self._gone[r["id"]] = None
                    continue
                keep.append(r)
            self._forget_old()
        if not self.policy.active:
            return keep
        fix = self.policy.apply_interaction if table == "interactions" else self.policy.apply_feedback
        return [fix(r) for r in keep]


_GUARD: IngestGuard | None = None
_GUARD_LOCK = threading.Lock()


def default_guard() -> IngestGuard:
    """The process's guard: made on first use from ``$TUNELOOP_PII_MODE`` / ``_HASH_KEY``
    unless :func:`configure` set one (the server does, from its settings)."""
    global _GUARD
    if _GUARD is None:
        with _GUARD_LOCK:
            if _GUARD is None:
                _GUARD = IngestGuard(policy_from_settings())
    return _GUARD


def configure(settings: Any = None, *, policy: PiiPolicy | None = None) -> IngestGuard:
    """Set the process's guard from ``settings`` (``pii_mode``, ``pii_hash_key``) or a policy."""
    global _GUARD
    guard = IngestGuard(policy or policy_from_settings(settings))
    with _GUARD_LOCK:
        _GUARD = guard
    return guard
