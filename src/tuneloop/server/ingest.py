"""The ingestion API: interactions and feedback in, statistics out.

    POST /v1/interactions   {"interactions": [{...}, ...]} or one interaction object
    POST /v1/feedback       {"feedback": [{...}, ...]} or one object, incl. seed 000's {id, rating}
    GET  /v1/stats          usage statistics (?since=<epoch or ISO time>)

Writes are idempotent on ids (a row whose id exists is skipped) and all-or-nothing per
request: any bad item rejects the whole body with a 422 naming the field, and nothing is
written. The rules for each field live in :mod:`tuneloop.capture.records`; the typed
dicts here let Pydantic check JSON types and document the bodies in the OpenAPI schema.
"""
from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import pydantic
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, with_config
from typing_extensions import Required, TypedDict  # pydantic needs these on Python < 3.12
from starlette.concurrency import run_in_threadpool

from tuneloop.capture.queries import statistics
from tuneloop.capture.records import normalize_feedback, normalize_interaction
from tuneloop.errors import ValidationError
from tuneloop.server.auth import SECURITY, requires

__all__ = ["router", "InteractionIn", "InteractionBatch", "FeedbackIn", "FeedbackBatch", "IngestResult",
           "parse_json"]

router = APIRouter(prefix="/v1", tags=["ingestion"])
# TypedDicts, not BaseModels: validating into plain dicts is ~4x cheaper than building and
# dumping 100 models per batch, and the dicts go straight to capture.records.
_Open = ConfigDict(strict=True, extra="allow")
_Closed = ConfigDict(strict=True, extra="forbid")
Id = Annotated[str, Field(min_length=1, max_length=64)]


@with_config(_Open)
class MessageIn(TypedDict, total=False):
    """One chat message, OpenAI style."""

    role: Required[str]
    content: str | list[dict[str, Any]] | None


@with_config(_Open)
class InteractionIn(TypedDict, total=False):
    """One interaction. ``query`` defaults to the last user message; unknown fields go to metadata."""

    id: Annotated[Id | None, Field(description="Client-made id (UUIDv7); the idempotency key.")]
    ts: Annotated[float | None, Field(description="Epoch seconds; default: when received.")]
    query: str | None
    response: str | None
    messages: list[MessageIn] | None
    model: str | None
    expert: str | None
    version_id: str | None
    experiment_id: str | None
    arm: str | None
    user_id: str | None
    session_id: str | None
    trace_id: str | None
    parent_id: str | None
    kind: Annotated[str | None, Field(description="chat | span | retrieval")]
    latency_ms: float | None
    token_count: int | None
    prompt_tokens: int | None
    completion_tokens: int | None
    cost: float | None
    quality_score: float | None
    reward: float | None
    status: Annotated[str | None, Field(description="ok | error")]
    error: str | None
    failure_category: str | None
    consent: bool | None
    metadata: dict[str, Any] | None


@with_config(_Closed)
class InteractionBatch(TypedDict):
    interactions: list[InteractionIn]


@with_config(_Closed)
class FeedbackIn(TypedDict, total=False):
    """Feedback on an interaction: ``interaction_id`` (or ``id``), ``kind``, ``value``, ``text``.

    Also seed 000's ``{"id": ..., "rating": 1..5}`` and ``{"id": ..., "feedback": -1|0|1}``.
    """

    interaction_id: str | None
    id: Annotated[str | None, Field(description="The interaction's id when interaction_id is absent, "
                                                "else this feedback's own id.")]
    feedback_id: Annotated[str | None, Field(description="This feedback's own id (idempotency key).")]
    kind: Annotated[str | None, Field(description="thumbs | rating | comment | report | regenerate | copy | "
                                                  "dwell | continue | session | pairwise")]
    value: float | None
    rating: float | None
    feedback: float | None
    text: str | None
    source: Annotated[str | None, Field(description="user | implicit | judge | annotator")]
    user_id: str | None
    ts: float | None
    metadata: dict[str, Any] | None
    meta: dict[str, Any] | None


@with_config(_Closed)
class FeedbackBatch(TypedDict):
    feedback: list[FeedbackIn]


class IngestResult(BaseModel):
    accepted: int = Field(description="Items in the request.")
    inserted: int = Field(description="Items that were new (the rest had ids already stored).")
    ids: list[str]


_interactions = TypeAdapter(list[InteractionIn])
_feedback = TypeAdapter(list[FeedbackIn])
_interaction_batch = TypeAdapter(InteractionBatch)
_feedback_batch = TypeAdapter(FeedbackBatch)


def parse_json(body: bytes) -> Any:
    """The JSON value of a request body, or a 422 naming the problem."""
    if not body.strip():
        raise ValidationError("body: empty; send a JSON object", field="body")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationError(f"body: invalid JSON: {exc}", field="body") from None


def _items(data: Any, key: str) -> tuple[list[Any], str]:
    """The items of a batch body ``{key: [...]}``, a bare list, or a single object; and the field prefix."""
    # {"feedback": -1} is seed 002's single feedback, not a batch: a batch holds a list.
    if isinstance(data, dict) and key in data and (isinstance(data[key], list) or set(data) == {key}):
        if set(data) != {key}:
            extra = sorted(set(data) - {key})[0]
            raise ValidationError(f"{extra}: unknown field next to {key!r}", field=extra)
        if not isinstance(data[key], list):
            raise ValidationError(f"{key}: expected a list, got {type(data[key]).__name__}", field=key)
        return data[key], key
    if isinstance(data, list):
        return data, key
    if isinstance(data, dict):
        return [data], ""
    raise ValidationError(f"body: expected an object or a list, got {type(data).__name__}", field="body")


def _field(prefix: str, loc: tuple) -> str:
    path = prefix
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "body"


def _validate(adapter: TypeAdapter, items: list[Any], prefix: str) -> list[dict[str, Any]]:
    try:
        return adapter.validate_python(items)
    except pydantic.ValidationError as exc:
        problems = []
        for e in exc.errors()[:5]:
            loc = e["loc"] if prefix else e["loc"][1:]  # a single object has no index
            problems.append(f"{_field(prefix, tuple(loc))}: {e['msg']}")
        first = exc.errors()[0]
        field = _field(prefix, tuple(first["loc"] if prefix else first["loc"][1:]))
        raise ValidationError("; ".join(problems), field=field) from None


def _normalize(normalize, items: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    rows = []
    for i, item in enumerate(items):
        try:
            rows.append(normalize(item))
        except ValidationError as exc:
            where = f"{prefix}[{i}]" if prefix else ""
            inner = str(exc.details.get("field") or "")
            message = exc.message
            if inner == "value" and "value" not in item:  # name the field the client sent
                alias = next((a for a in ("rating", "feedback") if a in item), None)
                if alias:
                    inner, message = alias, alias + message[len("value"):]
            field = f"{where}.{inner}" if where and inner else (where or inner or "body")
            raise ValidationError(f"{where + '.' if where else ''}{message}", field=field) from None
    return rows


def _prepare(body: bytes, key: str, batch: TypeAdapter, adapter: TypeAdapter, normalize) -> list[dict[str, Any]]:
    # In a worker thread: parsing a large batch must not stall the event loop.
    try:  # fast path: a well-formed batch, parsed and checked in one pass by pydantic-core
        items, prefix = batch.validate_json(body)[key], key
    except pydantic.ValidationError:  # any other shape, or a mistake: the path that names the field
        items, prefix = _items(parse_json(body), key)
        items = _validate(adapter, items, prefix)
    return _normalize(normalize, items, prefix)


async def _ingest(request: Request, key: str, batch: TypeAdapter, adapter: TypeAdapter,
                  normalize) -> IngestResult:
    body = await request.body()
    rows = await run_in_threadpool(_prepare, body, key, batch, adapter, normalize)
    # Group commit: the writer thread stores these rows with those of concurrent requests;
    # awaiting the future holds no worker thread, and it resolves only after the commit.
    inserted = await asyncio.wrap_future(request.app.state.writer.submit(key, rows)) if rows else 0
    return IngestResult(accepted=len(rows), inserted=inserted, ids=[r["id"] for r in rows])


def _body_schema(batch: type, single: type) -> dict[str, Any]:
    ref = "#/components/schemas/{}"
    return {**SECURITY, "requestBody": {"required": True, "content": {"application/json": {"schema": {"anyOf": [
        {"$ref": ref.format(batch.__name__)}, {"$ref": ref.format(single.__name__)},
        {"type": "array", "items": {"$ref": ref.format(single.__name__)}}]}}}}}


@router.post("/interactions", response_model=IngestResult, dependencies=[Depends(requires("ingest"))],
             openapi_extra=_body_schema(InteractionBatch, InteractionIn))
async def post_interactions(request: Request) -> IngestResult:
    """Store one interaction or a batch (``{"interactions": [...]}``); idempotent on ``id``."""
    return await _ingest(request, "interactions", _interaction_batch, _interactions, normalize_interaction)


@router.post("/feedback", response_model=IngestResult, dependencies=[Depends(requires("ingest"))],
             openapi_extra=_body_schema(FeedbackBatch, FeedbackIn))
async def post_feedback(request: Request) -> IngestResult:
    """Store feedback: one object, a batch (``{"feedback": [...]}``), or seed 000's ``{id, rating}``."""
    return await _ingest(request, "feedback", _feedback_batch, _feedback, normalize_feedback)


@router.get("/stats", dependencies=[Depends(requires("read"))], openapi_extra=SECURITY)
async def get_stats(request: Request, since: str | None = Query(
        None, description="Only interactions at or after this time (epoch seconds or ISO date/time).")) -> dict:
    """Usage statistics: totals, feedback and positive rates, latency percentiles, per-model counts."""
    value: Any = since
    if since is not None:
        try:
            value = float(since)
        except ValueError:
            pass
    return await run_in_threadpool(statistics, request.app.state.db, value)


EXTRA_SCHEMAS = (InteractionBatch, InteractionIn, FeedbackBatch, FeedbackIn)
