"""The dashboard's actions (POST): sign in and out, review golden cases, annotate.

Every action checks the CSRF token and the permission, calls the package that owns the
change, and answers ``303 See Other`` to the page to show next (htmx follows it and swaps
the part it asked for; without JavaScript the browser simply loads it).
"""
from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from tuneloop.errors import AuthError, ConflictError, ValidationError
from tuneloop.server.dashboard import annotation
from tuneloop.server.dashboard.web import (COOKIE, PREFIX, DashboardRoute, Viewer, check_csrf, current_viewer,
                                           form_data, render, require, safe_next)

__all__ = ["router"]

router = APIRouter(prefix=PREFIX, route_class=DashboardRoute, include_in_schema=False)


def _see_other(path: str, **params: str) -> RedirectResponse:
    query = urlencode({k: v for k, v in params.items() if v})
    return RedirectResponse(PREFIX + path + (f"?{query}" if query else ""), status_code=303)


async def _acting(request: Request, *permissions: str) -> tuple[Viewer, dict[str, str]]:
    """The viewer and form of an action, after the CSRF and permission checks."""
    form = await form_data(request)
    viewer = await run_in_threadpool(current_viewer, request)
    check_csrf(request, viewer, form)
    require(viewer, *permissions)
    return viewer, form


# ---------------------------------------------------------------- sign in / out
@router.post("/login")
async def login(request: Request) -> Response:
    form = await form_data(request)
    target = safe_next(form.get("next"))
    raw = (form.get("key") or "").strip()
    state = request.app.state
    try:
        key = await run_in_threadpool(state.verifier.verify, raw)
    except AuthError as exc:
        return render(request, "login.html", None, status=401, next=target, error=exc.message)
    if not key.allows("read"):
        return render(request, "login.html", None, status=403, next=target,
                      error=f"a key of scope {key.scope!r} cannot see the dashboard; use a read or admin key")
    value, max_age = await run_in_threadpool(state.dashboard.sessions.issue, key)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(COOKIE, value, max_age=max_age, path=PREFIX, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    await form_data(request)
    response = RedirectResponse(PREFIX + "/login", status_code=303)
    response.delete_cookie(COOKIE, path=PREFIX, httponly=True, samesite="strict")
    return response


# ---------------------------------------------------------------- golden set
@router.post("/golden/{example_id}/review")
async def review_golden(request: Request, example_id: str) -> Response:
    from tuneloop.evaluate import golden

    viewer, form = await _acting(request, "admin")
    decision = form.get("decision")
    if decision not in ("approve", "reject"):
        raise ValidationError("decision must be approve or reject", field="decision")
    kwargs: dict[str, Any] = {}
    if decision == "approve":
        kwargs["expected"] = form.get("expected") or None
        kwargs["checker"] = form.get("checker") or None
    example = await run_in_threadpool(golden.review, request.app.state.db, example_id, decision == "approve",
                                      reviewer=f"dashboard:{viewer.annotator}", **kwargs)
    return _see_other("/golden", set=example.set_name, done=f"{decision}d {example_id}")


# ---------------------------------------------------------------- annotation
@router.post("/annotate/{annotation_id}")
async def annotate_pair(request: Request, annotation_id: str) -> Response:
    viewer, form = await _acting(request, "annotate", "admin")
    try:
        await run_in_threadpool(annotation.record_choice, request.app.state.db, annotation_id,
                                form.get("choice", ""), annotator=viewer.annotator, comment=form.get("comment"))
    except ConflictError:  # another annotator was faster: theirs stands, show the next pair
        return _see_other("/annotate", last="taken")
    return _see_other("/annotate", last=form.get("choice", ""))


def _stars(form: dict[str, str]) -> int:
    raw = form.get("rating", "")
    if not raw.isdigit():
        raise ValidationError("choose a rating from 1 to 5 stars", field="rating")
    return int(raw)


@router.post("/annotate/rate/{annotation_id}")
async def rate_queued(request: Request, annotation_id: str) -> Response:
    viewer, form = await _acting(request, "annotate", "admin")
    interaction_id = form.get("interaction_id", "")
    await run_in_threadpool(annotation.record_rating, request.app.state.db, interaction_id, _stars(form),
                            annotator=viewer.annotator, comment=form.get("comment"), annotation_id=annotation_id)
    return _see_other("/annotate/rate", last="rated")


@router.post("/interactions/{interaction_id}/rate")
async def rate_interaction(request: Request, interaction_id: str) -> Response:
    viewer, form = await _acting(request, "annotate", "admin")
    await run_in_threadpool(annotation.record_rating, request.app.state.db, interaction_id, _stars(form),
                            annotator=viewer.annotator, comment=form.get("comment"))
    request.app.state.dashboard.cache.rollup.invalidate()
    return _see_other(f"/interactions/{interaction_id}", saved="1")
