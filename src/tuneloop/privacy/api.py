"""Admin routes of the privacy package (every one needs an ``admin`` key).

    DELETE /v1/users/{user_id}            right to delete (taints lineage, leaves a tombstone)
    GET    /v1/users/{user_id}            consent and deletion state
    PUT    /v1/users/{user_id}/consent    {"training": true|false}
    GET    /v1/audit                      the audit log, newest first (read only: no route edits it)

>>> from tuneloop.privacy.api import router                     # doctest: +SKIP
>>> app.include_router(router)                                   # doctest: +SKIP

The actor written to the audit log is the key that made the call (``key:<name>/<id>``).
Bodies are parsed after the key check, so a caller without a key learns nothing from a
422 about what the route expects.
"""
from __future__ import annotations

import json
from typing import Any

import pydantic
from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from tuneloop.errors import ValidationError
from tuneloop.privacy.audit import MAX_LIMIT, actor_of_key, list_audit
from tuneloop.privacy.consent import get_subject, set_consent
from tuneloop.privacy.deletion import delete_user
from tuneloop.server.auth import SECURITY, requires

__all__ = ["router", "ConsentIn", "SubjectOut", "DeletionOut", "AuditEntryOut", "AuditPage"]

router = APIRouter(prefix="/v1", tags=["privacy"])
_ADMIN = [Depends(requires("admin"))]


class ErrorBody(BaseModel):
    message: str
    type: str
    code: int
    model_config = ConfigDict(extra="allow")


class ErrorOut(BaseModel):
    error: ErrorBody


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": text} for code, text in (
        (401, "No API key, or an invalid or revoked one."), (403, "The key's scope is not admin."),
        (404, "Not found."), (409, "The state does not allow it."), (413, "Body too large."),
        (422, "Bad input; the message names the field."), (429, "Rate limit exceeded."))}


class ConsentIn(BaseModel):
    """Whether the user's interactions may be used to train models."""

    model_config = ConfigDict(extra="forbid", strict=True)
    training: bool


class SubjectOut(BaseModel):
    user_id: str
    consent_training: bool
    deleted: bool
    deleted_at: float | None = None
    created_at: float | None = None
    updated_at: float | None = None


class DeletionOut(BaseModel):
    user_id: str
    deletion_id: str
    actor: str
    deleted_at: float
    already_deleted: bool
    interactions: int = Field(description="Interactions deleted.")
    feedback: int
    annotations: int
    golden_examples: int
    retrieval_logs: int
    tainted_datasets: list[str] = Field(description="Snapshots that held the user's interactions.")
    tainted_versions: list[str] = Field(description="Model versions newly marked tainted.")
    champion_tainted: list[str] = Field(description="Aliases (name=version) now serving a tainted version.")
    dataset_paths: list[str]
    purged_files: list[str]
    late_rows: int = Field(description="Rows that arrived during the deletion and were swept after it.")


class AuditEntryOut(BaseModel):
    id: int
    ts: float
    actor: str
    action: str
    target: str | None = None
    before: Any = None
    after: Any = None


class AuditPage(BaseModel):
    entries: list[AuditEntryOut]
    next_before_id: int | None = Field(None, description="Pass as before_id for the next (older) page.")


UserId = Path(..., min_length=1, max_length=255, pattern=r"\S", description="The application's user id.")
_CONSENT_BODY = {**SECURITY, "requestBody": {"required": True, "content": {"application/json": {
    "schema": ConsentIn.model_json_schema()}}}}


def _parse_consent(body: bytes) -> ConsentIn:
    try:
        return ConsentIn.model_validate_json(body)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == "json_invalid" or not body.strip():
            try:
                json.loads(body or b"")
            except ValueError as err:
                raise ValidationError(f"body: invalid JSON: {err}", field="body") from None
        field = ".".join(str(p) for p in first["loc"]) or "body"
        raise ValidationError(f"{field}: {first['msg']}", field=field) from None


def _actor(request: Request) -> str:
    return actor_of_key(getattr(request.state, "api_key", None))


@router.delete("/users/{user_id:path}", response_model=DeletionOut, dependencies=_ADMIN, openapi_extra=SECURITY,
               responses=_ERRORS)
async def delete_user_route(request: Request, user_id: str = UserId,
                            purge_files: bool = Query(False, description="Also remove the tainted snapshots' files.")
                            ) -> DeletionOut:
    """Delete the user's interactions, feedback and annotations; taint datasets and versions built on them."""
    report = await run_in_threadpool(delete_user, request.app.state.db, user_id, _actor(request),
                                     purge_files=purge_files)
    return DeletionOut(**report.to_dict())


@router.put("/users/{user_id:path}/consent", response_model=SubjectOut, dependencies=_ADMIN,
            openapi_extra=_CONSENT_BODY, responses=_ERRORS)
async def put_consent(request: Request, user_id: str = UserId) -> SubjectOut:
    """Grant (``{"training": true}``) or withdraw (``false``) the user's consent to training."""
    body = _parse_consent(await request.body())
    s = await run_in_threadpool(lambda: set_consent(request.app.state.db, user_id, training=body.training,
                                                    actor=_actor(request)))
    return SubjectOut(**s.to_dict())


@router.get("/users/{user_id:path}", response_model=SubjectOut, dependencies=_ADMIN, openapi_extra=SECURITY,
            responses=_ERRORS)
async def get_user(request: Request, user_id: str = UserId) -> SubjectOut:
    """The user's consent and deletion state (defaults for a user never changed)."""
    s = await run_in_threadpool(get_subject, request.app.state.db, user_id)
    return SubjectOut(**s.to_dict())


@router.get("/audit", response_model=AuditPage, dependencies=_ADMIN, openapi_extra=SECURITY, responses=_ERRORS)
async def get_audit(request: Request,
                    actor: str | None = Query(None, max_length=255), action: str | None = Query(None, max_length=64),
                    target: str | None = Query(None, max_length=255),
                    since: float | None = Query(None, allow_inf_nan=False, description="Epoch seconds, inclusive."),
                    until: float | None = Query(None, allow_inf_nan=False, description="Epoch seconds, exclusive."),
                    before_id: int | None = Query(None, ge=0, le=2**62, description="Older than this id."),
                    limit: int = Query(100, ge=1, le=MAX_LIMIT)) -> AuditPage:
    """Audit rows, newest first: who did what, when, to which target, before and after."""
    entries = await run_in_threadpool(lambda: list_audit(
        request.app.state.db, actor=actor, action=action, target=target, since=since, until=until,
        before_id=before_id, limit=limit))
    nxt = entries[-1].id if len(entries) == limit else None
    return AuditPage(entries=[AuditEntryOut(**e.to_dict()) for e in entries], next_before_id=nxt)
