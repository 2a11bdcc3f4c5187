"""Interaction and feedback rows: validation, normalization, and the batched writes.

One module turns a ``log()`` call, an SDK feedback call or an HTTP body into rows of
:data:`tuneloop.store.schema.interactions` / :data:`~tuneloop.store.schema.feedback`, and
writes batches of them idempotently (a row whose id exists is skipped). The writer thread
of :class:`~tuneloop.capture.UsageLogger` and the server's ingestion route share it.

>>> row = interaction_row(messages=[{"role": "user", "content": "Hi"}], response="Hello", model="m")
>>> row["query"], row["token_count"] > 0, len(row["dedupe_hash"])
('Hi', True, 64)
>>> feedback_row(row["id"], kind="rating", value=4)["value"]
4.0
>>> feedback_row(row["id"], kind="thumbs", value=2)
Traceback (most recent call last):
...
tuneloop.errors.ValidationError: value: thumbs feedback must be -1, 0 or 1, got 2
"""
from __future__ import annotations

import hashlib
import json
import math
import operator
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tuneloop.errors import ValidationError
from tuneloop.ids import new_id, now
from tuneloop.store import schema

INTERACTION_COLUMNS: tuple[str, ...] = tuple(c.name for c in schema.interactions.columns)
FEEDBACK_COLUMNS: tuple[str, ...] = tuple(c.name for c in schema.feedback.columns)
_JSON_COLUMNS = {"messages", "meta"}

FEEDBACK_KINDS = ("thumbs", "rating", "comment", "report", "regenerate", "copy", "dwell",
                  "continue", "session", "pairwise")
FEEDBACK_SOURCES = ("user", "implicit", "judge", "annotator")
#: Kinds that say something about how the user judged the answer (counted in feedback_rate).
EXPLICIT_KINDS = ("thumbs", "rating", "comment", "report")

_STR_COLUMNS = ("kind", "user_id", "session_id", "trace_id", "parent_id", "model", "expert",
                "version_id", "experiment_id", "arm", "status", "error", "failure_category")
_FLOAT_COLUMNS = ("latency_ms", "cost", "quality_score", "reward")
_INT_COLUMNS = ("token_count", "prompt_tokens", "completion_tokens")
_DEFAULTS = {"kind": "chat", "model": "", "status": "ok", "consent": True}


# ---------------------------------------------------------------- field checks
def _fail(field: str, problem: str) -> ValidationError:
    return ValidationError(f"{field}: {problem}", field=field)


def _check_str(field: str, value: Any, max_len: int | None = None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _fail(field, f"expected a string, got {type(value).__name__}")
    if max_len is not None and len(value) > max_len:
        raise _fail(field, f"longer than {max_len} characters")
    return value


def _check_float(field: str, value: Any, lo: float | None = None, hi: float | None = None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(field, f"expected a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise _fail(field, f"must be finite, got {value}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise _fail(field, f"must be between {lo} and {hi}, got {value:g}")
    return value


def _check_int(field: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise _fail(field, f"expected an integer, got {type(value).__name__}")
    if value < 0:
        raise _fail(field, f"must be >= 0, got {value}")
    return value


def _check_id(field: str, value: Any) -> str:
    if value is None:
        return new_id()
    if not isinstance(value, str) or not value or len(value) > 64:
        raise _fail(field, "must be a non-empty string of at most 64 characters")
    return value


def _content_text(content: Any) -> str:
    """The text of a chat message's content: a string, or the text parts of a list."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = [p.get("text", "") for p in content if isinstance(p, Mapping) and p.get("type", "text") == "text"]
    return "\n".join(str(p) for p in parts)


def check_messages(messages: Any) -> list[dict[str, Any]] | None:
    """Validate an OpenAI-style chat list: a list of ``{"role": str, "content": ...}``."""
    if messages is None:
        return None
    if not isinstance(messages, Sequence) or isinstance(messages, (str, bytes)):
        raise _fail("messages", f"expected a list of messages, got {type(messages).__name__}")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise _fail(f"messages[{i}]", f"expected an object, got {type(m).__name__}")
        if not isinstance(m.get("role"), str):
            raise _fail(f"messages[{i}].role", "must be a string")
        content = m.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise _fail(f"messages[{i}].content", "must be a string, a list of parts, or null")
        out.append(dict(m))
    return out


def last_user_message(messages: Sequence[Mapping[str, Any]]) -> str:
    """The text of the last ``user`` message ("" when there is none)."""
    for m in reversed(messages):
        if m.get("role") == "user":
            return _content_text(m.get("content"))
    return ""


def _normalize_text(text: str) -> str:
    return " ".join(text.split()).lower()


def dedupe_hash(query: str, response: str) -> str:
    """sha256 of the whitespace-collapsed, lower-cased query and response.

    >>> dedupe_hash("Hi  there", "OK") == dedupe_hash("hi there", "ok ")
    True
    """
    key = _normalize_text(query) + "\x1f" + _normalize_text(response)
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def estimate_tokens(*texts: str) -> int:
    """A rough token count (~4 characters per token) for rows logged without one."""
    return sum((len(t) + 3) // 4 for t in texts)


# ---------------------------------------------------------------- interactions
def interaction_row(*, query: str | None = None, response: str | None = None,
                    messages: Any = None, metadata: Mapping[str, Any] | None = None,
                    id: str | None = None, ts: float | None = None, **fields: Any) -> dict[str, Any]:
    """Validate one interaction and return its row (every column present).

    ``query`` defaults to the last user message of ``messages``; ``token_count`` to
    ``prompt_tokens + completion_tokens`` or an estimate; ``metadata`` goes to ``meta``.
    Keyword arguments that are interaction columns fill them; any other keyword is kept
    in ``meta`` (like ``metadata``). Raises :class:`ValidationError` naming the field.
    """
    named = {k: fields.pop(k) for k in _NAMED if k in fields}
    return complete_interaction(prepare_interaction(query, response, messages, metadata, id, ts,
                                                    extra=fields, **named))


_NAMED = ("model", "expert", "latency_ms", "quality_score", "token_count", "user_id", "session_id",
          "version_id", "experiment_id", "arm")


def _str(field: str, value: Any) -> str:
    if value.__class__ is str and len(value) <= 255:
        return value
    return _check_str(field, value, 255)  # type: ignore[return-value]


def prepare_interaction(query: str | None = None, response: str | None = None, messages: Any = None,
                        metadata: Mapping[str, Any] | None = None, id: str | None = None,
                        ts: float | None = None, *, model: str | None = None, expert: str | None = None,
                        latency_ms: float | None = None, quality_score: float | None = None,
                        token_count: int | None = None, user_id: str | None = None,
                        session_id: str | None = None, version_id: str | None = None,
                        experiment_id: str | None = None, arm: str | None = None,
                        extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The validating half of :func:`interaction_row`: every check, none of the derived
    columns (``token_count`` estimate, ``dedupe_hash``), which :func:`complete_interaction`
    adds. ``UsageLogger.log`` runs only this half, so the caller's thread never hashes.

    Written for ``log()``'s hot path: explicit parameters instead of ``**kwargs``, and
    as few new containers as possible. Each dict or tuple allocated counts towards the
    garbage collector's next generation-0 pass, and those passes are what sets log()'s p99.
    """
    msgs = None if messages is None else check_messages(messages)
    if query.__class__ is not str:
        if query is not None:
            raise _fail("query", f"expected a string, got {type(query).__name__}")
        if msgs is None:
            raise _fail("query", "give query or messages")
        query = last_user_message(msgs)
    if response.__class__ is not str:
        response = _check_str("response", response) or ""
    if metadata is not None and not isinstance(metadata, Mapping):
        raise _fail("metadata", f"expected an object, got {type(metadata).__name__}")
    row: dict[str, Any] = dict.fromkeys(INTERACTION_COLUMNS)
    row.update(_DEFAULTS)
    row["id"] = new_id() if id is None else _check_id("id", id)
    row["ts"] = now() if ts is None else _check_float("ts", ts, lo=0.0)
    row["query"], row["response"], row["messages"] = query, response, msgs
    if model is not None:
        row["model"] = _str("model", model)
    if expert is not None:
        row["expert"] = _str("expert", expert)
    if user_id is not None:
        row["user_id"] = _str("user_id", user_id)
    if session_id is not None:
        row["session_id"] = _str("session_id", session_id)
    if version_id is not None:
        row["version_id"] = _str("version_id", version_id)
    if experiment_id is not None:
        row["experiment_id"] = _str("experiment_id", experiment_id)
    if arm is not None:
        row["arm"] = _str("arm", arm)
    if latency_ms is not None:
        row["latency_ms"] = _check_float("latency_ms", latency_ms, lo=0.0)
    if quality_score is not None:
        row["quality_score"] = _check_float("quality_score", quality_score)
    if token_count is not None:
        row["token_count"] = _check_int("token_count", token_count)
    meta = dict(metadata) if metadata else None
    if extra:
        meta = _apply_extra(row, extra, meta)
    row["meta"] = meta
    return row


def _apply_extra(row: dict[str, Any], extra: Mapping[str, Any], meta: dict[str, Any] | None) -> dict[str, Any] | None:
    """Keyword arguments beyond log()'s own: interaction columns, else metadata."""
    for key, value in extra.items():
        if value is None:
            continue
        if key in _STR_COLUMNS:
            row[key] = _check_str(key, value, 255)
        elif key in _FLOAT_COLUMNS:
            row[key] = _check_float(key, value, lo=0.0 if key in ("latency_ms", "cost") else None)
        elif key in _INT_COLUMNS:
            row[key] = _check_int(key, value)
        elif key == "consent":
            if not isinstance(value, bool):
                raise _fail("consent", "expected true or false")
            row[key] = value
        elif key in ("dedupe_hash", "meta"):
            raise _fail(key, "is computed; pass metadata= instead" if key == "meta" else "is computed")
        else:
            if meta is None:
                meta = {}
            meta[key] = value  # unknown keywords are the caller's metadata, not an error
    return meta


def complete_interaction(row: dict[str, Any]) -> dict[str, Any]:
    """Fill the derived columns of a prepared row (in place): token_count, dedupe_hash."""
    if row["token_count"] is None:
        pt, ct = row["prompt_tokens"], row["completion_tokens"]
        row["token_count"] = (pt or 0) + (ct or 0) if (pt is not None or ct is not None) \
            else estimate_tokens(row["query"], row["response"])
    if row["dedupe_hash"] is None:
        row["dedupe_hash"] = dedupe_hash(row["query"], row["response"])
    return row


def normalize_interaction(data: Mapping[str, Any]) -> dict[str, Any]:
    """An interaction row from a JSON object (an HTTP body item or a spooled record).

    Accepts ``metadata`` or ``meta`` for the metadata object; ``dedupe_hash`` is recomputed.
    """
    if not isinstance(data, Mapping):
        raise ValidationError(f"interaction: expected an object, got {type(data).__name__}", field="interaction")
    fields = dict(data)
    fields.pop("dedupe_hash", None)
    meta = fields.pop("meta", None)
    metadata = fields.pop("metadata", None)
    if meta is not None and metadata is not None:
        raise _fail("metadata", "give metadata or meta, not both")
    return interaction_row(metadata=metadata if metadata is not None else meta, **fields)


# ---------------------------------------------------------------- feedback
def _check_feedback_value(kind: str, value: Any, text: str | None) -> float | None:
    if kind == "thumbs":
        v = _check_float("value", value)
        if v not in (-1.0, 0.0, 1.0):
            raise _fail("value", f"thumbs feedback must be -1, 0 or 1, got {value!r}")
        return v
    if kind == "rating":
        v = _check_float("value", value)
        if v is None or not 1.0 <= v <= 5.0:
            raise _fail("value", f"rating feedback must be between 1 and 5, got {value!r}")
        return v
    if kind in ("dwell", "session"):
        v = _check_float("value", value, lo=0.0)
        if v is None:
            raise _fail("value", f"{kind} feedback needs value = seconds")
        return v
    if kind == "comment" and not (text and text.strip()):
        raise _fail("text", "comment feedback needs a non-empty text")
    return _check_float("value", value)


def feedback_row(interaction_id: str, *, kind: str = "thumbs", value: Any = None, text: str | None = None,
                 source: str = "user", user_id: str | None = None, id: str | None = None,
                 ts: float | None = None, meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Validate one piece of feedback on ``interaction_id`` and return its row.

    Kinds: thumbs (value -1/0/+1), rating (1-5), comment (text), report, and the implicit
    regenerate, copy, dwell (value = seconds), continue, session (value = seconds), pairwise.
    """
    if not isinstance(interaction_id, str) or not interaction_id or len(interaction_id) > 64:
        raise _fail("interaction_id", "must be a non-empty string of at most 64 characters")
    if kind not in FEEDBACK_KINDS:
        raise _fail("kind", f"must be one of {', '.join(FEEDBACK_KINDS)}; got {kind!r}")
    if source not in FEEDBACK_SOURCES:
        raise _fail("source", f"must be one of {', '.join(FEEDBACK_SOURCES)}; got {source!r}")
    text = _check_str("text", text)
    if meta is not None and not isinstance(meta, Mapping):
        raise _fail("meta", f"expected an object, got {type(meta).__name__}")
    return {
        "id": _check_id("id", id), "interaction_id": interaction_id, "kind": kind,
        "value": _check_feedback_value(kind, value, text), "text": text, "source": source,
        "user_id": _check_str("user_id", user_id, 255),
        "ts": now() if ts is None else _check_float("ts", ts, lo=0.0),
        "meta": dict(meta) if meta else None,
    }


def normalize_feedback(data: Mapping[str, Any]) -> dict[str, Any]:
    """A feedback row from a JSON object. Accepted shapes:

    - ``{"interaction_id": ..., "kind": ..., "value": ..., "text": ..., "id": <feedback id>}``
    - ``{"id": <interaction id>, "kind": ..., "value": ...}`` (no ``interaction_id``)
    - seed 000's ``{"id": ..., "rating": 1..5}`` and the seed's ``{"id": ..., "feedback": -1|0|1}``

    ``feedback_id`` names the feedback row's own id (the idempotency key) in any shape.
    """
    if not isinstance(data, Mapping):
        raise ValidationError(f"feedback: expected an object, got {type(data).__name__}", field="feedback")
    d = dict(data)
    if "interaction_id" in d:
        interaction_id, fid = d.pop("interaction_id"), d.pop("feedback_id", d.pop("id", None))
    else:
        interaction_id, fid = d.pop("id", None), d.pop("feedback_id", None)
    if interaction_id is None:
        raise _fail("interaction_id", "is required (or id)")
    kind, value = d.pop("kind", None), d.pop("value", None)
    for alias, alias_kind in (("rating", "rating"), ("feedback", "thumbs")):
        if alias in d:
            if value is not None:
                raise _fail(alias, "give value or " + alias + ", not both")
            value, kind = d.pop(alias), kind or alias_kind
    meta = d.pop("meta", None)
    metadata = d.pop("metadata", None)
    allowed = {"text", "source", "user_id", "ts"}
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise _fail(unknown[0], "unknown feedback field")
    return feedback_row(interaction_id, kind=kind or "thumbs", value=value, id=fid,
                        meta=metadata if metadata is not None else meta,
                        **{k: d[k] for k in allowed if d.get(k) is not None})


# ---------------------------------------------------------------- writes
# default=str: an odd object in metadata is stored as its text, never loses the row. One
# encoder, made once: json.dumps with any option builds a new encoder per call (~2 us).
encode_json = json.JSONEncoder(default=str, ensure_ascii=False).encode


def _dumps(value: Any) -> str | None:
    return None if value is None else encode_json(value)


def _tuples(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> list[tuple]:
    json_idx = [i for i, c in enumerate(columns) if c in _JSON_COLUMNS]
    pick = operator.itemgetter(*columns)  # C-speed column extraction: this loop is the hot path
    out = []
    for row in rows:
        try:
            values = pick(row)
        except KeyError:  # a hand-made row without every column
            values = tuple(row.get(c) for c in columns)
        if any(values[i] is not None for i in json_idx):
            values = list(values)
            for i in json_idx:
                values[i] = _dumps(values[i])
            values = tuple(values)
        out.append(values)
    return out


# SQLite limits bound parameters per statement (32766 since 3.32, 999 before).
_SQLITE_MAX_VARS = 32766 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999


def _write_sqlite(conn: Any, table: str, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> int:
    # Multi-row "INSERT OR IGNORE ... VALUES (...), (...)" over pre-built tuples: several
    # times faster than Core's per-row bind processing, and one sqlite3_step per few
    # hundred rows instead of one per row. pysqlite releases the GIL around every step,
    # so per-row steps make the writer queue for the GIL behind a busy host thread (up to
    # the 5 ms switch interval per row); few steps keep the writer fast under load.
    per = max(1, min(500, _SQLITE_MAX_VARS // len(columns)))
    head = f"INSERT OR IGNORE INTO {table} ({', '.join(columns)}) VALUES "
    one = "(" + ", ".join("?" * len(columns)) + ")"
    tuples = _tuples(rows, columns)
    raw = conn.connection.driver_connection
    before = raw.total_changes
    cur = raw.cursor()
    try:
        for i in range(0, len(tuples), per):
            chunk = tuples[i:i + per]
            cur.execute(head + ", ".join([one] * len(chunk)), [v for t in chunk for v in t])
    finally:
        cur.close()
    return raw.total_changes - before


def _write_postgres(conn: Any, table: str, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> int:
    # Fastest first: COPY straight into the table (ids are fresh UUIDv7s, so a conflict is
    # rare: a retry or a replay). On a duplicate id, roll back to the savepoint and COPY
    # into a session-local staging table, then INSERT ... ON CONFLICT DO NOTHING.
    # Measured side by side (benchmarks/bench_capture.py --pg-compare): direct COPY >
    # staging COPY > psycopg executemany ~ unnest arrays > multi-row VALUES.
    from psycopg import errors as pg_errors

    cols = ", ".join(columns)
    tuples = _tuples(rows, columns)
    cur = conn.connection.driver_connection.cursor()
    try:
        cur.execute("SAVEPOINT tuneloop_copy")
        try:
            with cur.copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
                for values in tuples:
                    copy.write_row(values)
            cur.execute("RELEASE SAVEPOINT tuneloop_copy")
            return len(tuples)
        except pg_errors.UniqueViolation:
            cur.execute("ROLLBACK TO SAVEPOINT tuneloop_copy")
        stage = f"_tuneloop_stage_{table}"
        cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {stage} "
                    f"(LIKE {table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
        with cur.copy(f"COPY {stage} ({cols}) FROM STDIN") as copy:
            for values in tuples:
                copy.write_row(values)
        cur.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {stage} ON CONFLICT DO NOTHING")
        inserted = max(cur.rowcount, 0)
        cur.execute(f"TRUNCATE {stage}")  # a later batch in the same transaction starts empty
        return inserted
    finally:
        cur.close()


def write_rows(db: Any, conn: Any, table: str, rows: Sequence[Mapping[str, Any]]) -> int:
    """Insert normalized rows of ``table`` on an open connection, skipping existing ids.

    Returns how many rows were new.
    """
    if not rows:
        return 0
    from tuneloop.privacy.pii_ingest import default_guard

    # Every capture path (SDK, ingestion API, gateway) writes here: deleted users' rows are
    # dropped and the configured PII policy is applied before anything is stored.
    rows = default_guard().apply(conn, table, rows)
    if not rows:
        return 0
    columns = INTERACTION_COLUMNS if table == "interactions" else FEEDBACK_COLUMNS
    if db.is_sqlite:
        return _write_sqlite(conn, table, columns, rows)
    if db.dialect == "postgresql" and db.engine.dialect.driver == "psycopg":
        return _write_postgres(conn, table, columns, rows)
    return db.insert_ignore(conn, getattr(schema, table), list(rows))


def write_interactions(db: Any, rows: Sequence[Mapping[str, Any]], conn: Any = None) -> int:
    """Insert interaction rows (from :func:`interaction_row`) in one transaction; idempotent on id.

    >>> from tuneloop.store import Database
    >>> db = Database.open("sqlite:///:memory:")
    >>> r = interaction_row(query="q", response="a", id="x1")
    >>> write_interactions(db, [r]), write_interactions(db, [r])
    (1, 0)
    """
    if conn is not None:
        return write_rows(db, conn, "interactions", rows)
    with db.begin() as c:
        return write_rows(db, c, "interactions", rows)


def write_feedback(db: Any, rows: Sequence[Mapping[str, Any]], conn: Any = None) -> int:
    """Insert feedback rows (from :func:`feedback_row`) in one transaction; idempotent on id."""
    if conn is not None:
        return write_rows(db, conn, "feedback", rows)
    with db.begin() as c:
        return write_rows(db, c, "feedback", rows)
