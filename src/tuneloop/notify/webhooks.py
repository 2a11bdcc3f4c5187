"""Webhooks: configuration, bodies (generic JSON and Slack), HMAC signatures, delivery with retries.

Every request carries (like Stripe's and GitHub's webhooks)::

    Content-Type: application/json
    X-Tuneloop-Event: promotion
    X-Tuneloop-Delivery: <delivery id, the same on every retry: receivers dedupe on it>
    X-Tuneloop-Timestamp: <unix seconds of this attempt>
    X-Tuneloop-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" with the hook's secret>

A receiver recomputes the HMAC over the raw body (:func:`verify_signature`) and refuses
timestamps older than a few minutes (replays). 2xx is delivered; 5xx, 408, 429 and
connection errors are retried with exponential backoff (``Retry-After`` honoured, capped)
up to ``max_attempts``; any other 4xx fails at once (retrying cannot fix it).

>>> hook = WebhookConfig.from_dict({"url": "https://hooks.example.com/x", "secret": "s3cret", "events": ["promotion"]})
>>> hook.wants("promotion"), hook.wants("drift_alert")
(True, False)
>>> ts, sig = sign("s3cret", b'{"a":1}', timestamp=1700000000)
>>> verify_signature("s3cret", b'{"a":1}', ts, sig, now=1700000010)
True
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from tuneloop.errors import ConfigError

EVENTS = ("promotion", "rollback", "gate_failure", "drift_alert", "approval_request")
FORMATS = ("json", "slack")
SIGNATURE_HEADER = "X-Tuneloop-Signature"
TIMESTAMP_HEADER = "X-Tuneloop-Timestamp"
RETRY_STATUSES = (408, 429)


@dataclass
class WebhookConfig:
    """One webhook. ``secret`` may be ``"env:NAME"`` to read it from the environment."""

    url: str = field(metadata={"help": "http(s) URL that receives a POST per event"})
    format: str = field(default="json", metadata={"help": "json (generic body) | slack (text + blocks)"})
    events: list[str] = field(default_factory=lambda: list(EVENTS), metadata={
        "help": f"events to send: {', '.join(EVENTS)} (or '*')"})
    secret: str | None = field(default=None, metadata={"help": "HMAC-SHA256 signing key, or env:NAME"})
    name: str | None = field(default=None, metadata={"help": "label in webhook_deliveries (default: a hash of the URL)"})
    timeout_s: float = field(default=10.0, metadata={"help": "seconds per attempt"})
    max_attempts: int = field(default=5, metadata={"help": "attempts before a delivery is marked failed"})
    backoff_s: float = field(default=1.0, metadata={"help": "first retry delay; doubles per attempt"})
    max_backoff_s: float = field(default=60.0, metadata={"help": "longest retry delay"})

    def __post_init__(self) -> None:
        parts = urlsplit(str(self.url))
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"webhooks: url must be an http(s) URL, got {self.url!r}")
        if self.format not in FORMATS:
            raise ConfigError(f"webhooks: format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        events = [self.events] if isinstance(self.events, str) else list(self.events or [])
        self.events = list(EVENTS) if "*" in events else events
        bad = [e for e in self.events if e not in EVENTS]
        if bad or not self.events:
            raise ConfigError(f"webhooks: unknown event(s) {bad or '(none)'}; use {', '.join(EVENTS)} or '*'")
        if self.max_attempts < 1 or self.timeout_s <= 0 or self.backoff_s < 0 or self.max_backoff_s < 0:
            raise ConfigError("webhooks: max_attempts must be >= 1, timeout_s > 0, backoff_s and max_backoff_s >= 0")
        if isinstance(self.secret, str) and self.secret.startswith("env:") and not os.environ.get(self.secret[4:]):
            raise ConfigError(f"webhooks: secret {self.secret!r} names an unset environment variable")
        self.name = self.name or "hook-" + hashlib.sha256(str(self.url).encode()).hexdigest()[:10]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "WebhookConfig":
        if isinstance(data, WebhookConfig):
            return data
        if not isinstance(data, Mapping):
            raise ConfigError(f"webhooks: each webhook is a mapping with a url, got {data!r}")
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown or "url" not in data:
            raise ConfigError(f"webhooks: unknown or missing keys {unknown or ['url']}; known: {', '.join(cls.__dataclass_fields__)}")
        return cls(**data)

    def wants(self, event: str) -> bool:
        return event in self.events

    def signing_key(self) -> str | None:
        if isinstance(self.secret, str) and self.secret.startswith("env:"):
            return os.environ.get(self.secret[4:])
        return self.secret

    @property
    def safe_url(self) -> str:
        """Scheme and host only: Slack-style URLs carry their token in the path."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}" + ("/…" if parts.path not in ("", "/") or parts.query else "")

    def to_dict(self) -> dict[str, Any]:
        return {"url": self.safe_url, "format": self.format, "events": list(self.events), "name": self.name,
                "signed": bool(self.secret), "max_attempts": self.max_attempts}


# --------------------------------------------------------------------------- signatures
def sign(secret: str, body: bytes, *, timestamp: int | None = None) -> tuple[str, str]:
    """``(timestamp, "sha256=<hex>")``: HMAC-SHA256 over ``b"<timestamp>." + body``."""
    ts = str(int(time.time() if timestamp is None else timestamp))
    digest = hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return ts, f"sha256={digest}"


def verify_signature(secret: str, body: bytes, timestamp: str, signature: str, *, tolerance_s: float = 300.0,
                     now: float | None = None) -> bool:
    """What a receiver runs: the signature matches and the timestamp is recent (no replays)."""
    try:
        age = abs((time.time() if now is None else now) - int(timestamp))
    except (TypeError, ValueError):
        return False
    expected = sign(secret, body, timestamp=int(timestamp))[1]
    return age <= tolerance_s and hmac.compare_digest(expected, str(signature))


# --------------------------------------------------------------------------- bodies
def json_body(delivery_id: str, event: Mapping[str, Any]) -> dict[str, Any]:
    """The generic body: the event with its id, kind, subject, time, title, text and data."""
    return {"id": delivery_id, "source": "tuneloop", **{k: event[k] for k in
            ("event", "subject", "occurred_at", "occurred_at_utc", "title", "text", "data")}}


def slack_body(delivery_id: str, event: Mapping[str, Any]) -> dict[str, Any]:
    """A Slack incoming-webhook body: ``text`` (the notification line) and Block Kit ``blocks``."""
    fields = [{"type": "mrkdwn", "text": f"*{k}*\n{v}"} for k, v in (event.get("facts") or {}).items()][:10]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": event["title"][:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": event["text"][:3000] or event["title"]}},
    ]
    if fields:
        blocks.append({"type": "section", "fields": fields})
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text":
                   f"tuneloop · `{event['event']}` · {event['occurred_at_utc']} · delivery `{delivery_id}`"}]})
    return {"text": event["title"], "blocks": blocks}


def body_for(hook: WebhookConfig, delivery_id: str, event: Mapping[str, Any]) -> dict[str, Any]:
    return slack_body(delivery_id, event) if hook.format == "slack" else json_body(delivery_id, event)


# --------------------------------------------------------------------------- delivery
@dataclass(frozen=True)
class Attempt:
    """One POST: its number, the HTTP status (None on a connection error) and the error text."""

    number: int
    status: int | None
    error: str | None
    delivered: bool
    retryable: bool


def _retry_delay(hook: WebhookConfig, attempt: int, retry_after: str | None) -> float:
    """Exponential backoff with jitter (half to full of base * 2^(n-1)); Retry-After wins, capped."""
    if retry_after and retry_after.strip().isdigit():
        return min(float(retry_after), hook.max_backoff_s)
    base = min(hook.backoff_s * (2 ** (attempt - 1)), hook.max_backoff_s)
    return base * (0.5 + random.random() / 2)


def post_with_retries(hook: WebhookConfig, delivery_id: str, event: str, body: Mapping[str, Any], *,
                      client: Any = None, sleep: Callable[[float], None] = time.sleep,
                      on_attempt: Callable[[Attempt], None] | None = None) -> Attempt:
    """POST ``body`` until it is delivered, fails for good, or ``max_attempts`` are spent.

    Never raises: the last :class:`Attempt` says what happened.
    """
    import httpx

    raw = json.dumps(body, separators=(",", ":"), default=str).encode()
    own = client is None
    client = client or httpx.Client(timeout=hook.timeout_s, follow_redirects=False)
    last = Attempt(0, None, "not attempted", False, False)
    try:
        for n in range(1, hook.max_attempts + 1):
            headers = {"Content-Type": "application/json", "User-Agent": "tuneloop-webhooks/1",
                       "X-Tuneloop-Event": event, "X-Tuneloop-Delivery": delivery_id}
            key = hook.signing_key()
            if key:  # signed per attempt: the timestamp is the attempt's, so tolerance windows hold on retries
                headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER] = sign(key, raw)
            retry_after = None
            try:
                response = client.post(hook.url, content=raw, headers=headers, timeout=hook.timeout_s)
                code = response.status_code
                ok = 200 <= code < 300
                retryable = code >= 500 or code in RETRY_STATUSES
                last = Attempt(n, code, None if ok else f"HTTP {code}: {response.text[:200]}", ok, retryable)
                retry_after = response.headers.get("Retry-After")
            except httpx.HTTPError as exc:
                last = Attempt(n, None, f"{type(exc).__name__}: {exc}"[:500], False, True)
            if on_attempt is not None:
                on_attempt(last)
            if last.delivered or not last.retryable or n == hook.max_attempts:
                return last
            sleep(_retry_delay(hook, n, retry_after))
        return last
    finally:
        if own:
            client.close()
