"""HTTP routes for retrieval; include with ``app.include_router(tuneloop.retrieval.api.router)``.

    POST   /v1/retrieve              {"query", "k"?, "interaction_id"?, "rerank"?, "filter"?}   (ingest)
    POST   /v1/retrieval/feedback    {"retrieval_id" | "interaction_id", "used"?, "clicked"?, "skipped"?}  (ingest)
    POST   /v1/documents             {"documents": [{"id", "text", "meta"?}, ...]} or one document  (admin)
    DELETE /v1/documents/{id}        (admin)
    GET    /v1/documents/{id}        (read)
    GET    /v1/retrieval/builds      index builds and which one serves  (read)

The routes share one :class:`~tuneloop.retrieval.search.RetrievalIndex` per app,
``app.state.retrieval_index``: set it when building the app to choose the embedder,
reranker or index folder; otherwise it is made on first use from the environment
(``TUNELOOP_RETRIEVER``: a retriever version or embedder name; ``TUNELOOP_RERANKER``;
``TUNELOOP_INDEX_DIR``). Model calls run in the thread pool, never on the event loop.

>>> from fastapi import FastAPI
>>> [r.path for r in router.routes][:2]
['/v1/retrieve', '/v1/retrieval/feedback']
"""
from __future__ import annotations

import os
import threading
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from tuneloop.errors import NotFoundError, ValidationError
from tuneloop.retrieval import builds as B
from tuneloop.retrieval.logs import latest_log_for
from tuneloop.retrieval.search import MAX_K, RetrievalIndex
from tuneloop.server.auth import SECURITY, requires

__all__ = ["router", "RetrieveIn", "FeedbackIn", "DocumentIn", "DocumentsIn", "get_index"]

# Every retrieval route may answer 404 (no such document, log or index) or 409 (no index is
# serving yet); documented for clients and the schema fuzzer.
_ERRORS = {404: {"description": "No such document, retrieval or index."},
           409: {"description": "The index is not in a state that allows this."}}
router = APIRouter(prefix="/v1", tags=["retrieval"], responses=_ERRORS)
_Closed = ConfigDict(extra="forbid")
_make_lock = threading.Lock()


class RetrieveIn(BaseModel):
    model_config = _Closed
    query: Annotated[str, Field(min_length=1, description="The search text.")]
    k: Annotated[int, Field(ge=1, le=MAX_K, description="How many documents to return.")] = 10
    interaction_id: Annotated[str | None, Field(max_length=64, description=(
        "The interaction these documents are for; its metadata gets the retrieval log."))] = None
    rerank: Annotated[bool | None, Field(description="Rescore with the reranker (default: when one is set).")] = None
    candidates: Annotated[int | None, Field(ge=1, le=MAX_K, description="Documents the reranker rescores.")] = None
    filter: Annotated[dict[str, Any] | None, Field(description="Keep documents whose meta has these values.")] = None


class FeedbackIn(BaseModel):
    model_config = _Closed
    retrieval_id: Annotated[str | None, Field(description="The retrieval_id a search returned.")] = None
    interaction_id: Annotated[str | None, Field(description="Or: the interaction's latest retrieval.")] = None
    used: list[str] = Field(default_factory=list, description="Document ids that went into the answer.")
    clicked: list[str] = Field(default_factory=list, description="Document ids the user opened.")
    skipped: list[str] = Field(default_factory=list, description="Document ids shown and passed over.")


class DocumentIn(BaseModel):
    model_config = _Closed
    id: Annotated[str, Field(min_length=1, max_length=255)]
    text: Annotated[str, Field(min_length=1)]
    meta: dict[str, Any] | None = None


class DocumentsIn(BaseModel):
    model_config = _Closed
    documents: list[DocumentIn]


def get_index(request: Request) -> RetrievalIndex:
    """The app's RetrievalIndex (made on first use from the environment)."""
    state = request.app.state
    index = getattr(state, "retrieval_index", None)
    if index is None:
        with _make_lock:
            index = getattr(state, "retrieval_index", None)
            if index is None:
                index = RetrievalIndex(state.db, embedder=os.environ.get("TUNELOOP_RETRIEVER") or None,
                                       reranker=os.environ.get("TUNELOOP_RERANKER") or None)
                state.retrieval_index = index
    return index


async def _body(request: Request, shape: Any) -> Any:
    """Parse the JSON body after the key guard ran, so a caller without a key learns nothing
    about bodies (401, never 422); a bad body is a 422 naming the field."""
    import pydantic

    try:
        return pydantic.TypeAdapter(shape).validate_json(await request.body())
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ())) or "body"
        raise ValidationError(f"{where}: {err.get('msg')}", field=where) from None


def _doc(model: Any) -> dict:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}, **SECURITY}


@router.post("/retrieve", dependencies=[Depends(requires("ingest"))], openapi_extra=_doc(RetrieveIn))
async def retrieve(request: Request) -> dict[str, Any]:
    """The ``k`` nearest documents, optionally reranked; logged (returns ``retrieval_id``)."""
    body = await _body(request, RetrieveIn)
    index = get_index(request)
    result = await run_in_threadpool(index.search, body.query, body.k, interaction_id=body.interaction_id,
                                     rerank=body.rerank, candidates=body.candidates, filter=body.filter)
    return result.to_dict()


@router.post("/retrieval/feedback", dependencies=[Depends(requires("ingest"))], openapi_extra=_doc(FeedbackIn))
async def retrieval_feedback(request: Request) -> dict[str, Any]:
    """Report which documents of a search were used, clicked or skipped."""
    body = await _body(request, FeedbackIn)
    index = get_index(request)
    if bool(body.retrieval_id) == bool(body.interaction_id):
        raise ValidationError("give either retrieval_id or interaction_id", field="retrieval_id")

    def run() -> dict[str, Any]:
        rid = body.retrieval_id or latest_log_for(index.db, body.interaction_id)["id"]
        return {"retrieval_id": rid, "retrieval": index.feedback(rid, used=body.used, clicked=body.clicked,
                                                                  skipped=body.skipped)}

    return await run_in_threadpool(run)


@router.post("/documents", dependencies=[Depends(requires("admin"))], openapi_extra=_doc(DocumentsIn))
async def post_documents(request: Request) -> dict[str, Any]:
    """Add or update documents (one, a list, or ``{"documents": [...]}``); unchanged texts are not re-embedded."""
    body = await _body(request, DocumentsIn | DocumentIn | list[DocumentIn])
    docs = body.documents if isinstance(body, DocumentsIn) else body if isinstance(body, list) else [body]
    index = get_index(request)
    result = await run_in_threadpool(index.upsert, [d.model_dump(exclude_none=True) for d in docs])
    return result.to_dict() | {"count": len(docs)}


@router.delete("/documents/{doc_id:path}", dependencies=[Depends(requires("admin"))], openapi_extra=SECURITY)
async def delete_document(doc_id: str, request: Request) -> dict[str, Any]:
    """Delete a document; 404 when it does not exist (or is already deleted)."""
    index = get_index(request)
    deleted = await run_in_threadpool(index.delete, [doc_id])
    if not deleted:
        raise NotFoundError(f"document {doc_id!r} does not exist", document_id=doc_id)
    return {"deleted": list(deleted)}


@router.get("/documents/{doc_id:path}", dependencies=[Depends(requires("read"))], openapi_extra=SECURITY)
async def get_document(doc_id: str, request: Request) -> dict[str, Any]:
    """One live document."""
    index = get_index(request)
    doc = await run_in_threadpool(index.get, doc_id)
    return doc.to_dict()


@router.get("/retrieval/builds", dependencies=[Depends(requires("read"))], openapi_extra=SECURITY)
async def list_index_builds(request: Request) -> dict[str, Any]:
    """Index builds, newest first, with progress; ``active`` names the one serving."""
    db = request.app.state.db
    builds = await run_in_threadpool(B.list_builds, db)
    active = next((b.id for b in builds if b.status == "active"), None)
    return {"active": active, "builds": [b.to_dict() for b in builds]}
