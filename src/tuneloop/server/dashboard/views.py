"""The dashboard's pages (GET). Each route reads through the packages or
:mod:`~tuneloop.server.dashboard.queries` and renders a template; none changes anything.
"""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse

from tuneloop.errors import TuneloopError, ValidationError
from tuneloop.server.dashboard import annotation, drift, queries
from tuneloop.server.dashboard.overview import experiment_panel, overview
from tuneloop.server.dashboard.web import PREFIX, DashboardRoute, Viewer, current_viewer, render, safe_next

__all__ = ["router"]

router = APIRouter(prefix=PREFIX, route_class=DashboardRoute, include_in_schema=False)
Seen = Depends(current_viewer)


def _db(request: Request) -> Any:
    return request.app.state.db


def _state(request: Request) -> Any:
    return request.app.state.dashboard


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "") -> HTMLResponse:
    return render(request, "login.html", None, next=safe_next(next), error=None)


@router.get("/", response_class=HTMLResponse)
def overview_page(request: Request, viewer: Viewer = Seen) -> HTMLResponse:
    data = overview(_db(request), _state(request).cache)
    return render(request, "overview.html", viewer, nav="overview", **data)


@router.get("/fragments/experiment/{experiment_id}", response_class=HTMLResponse)
def experiment_fragment(request: Request, experiment_id: str, viewer: Viewer = Seen) -> HTMLResponse:
    try:
        data = experiment_panel(_db(request), _state(request).cache, experiment_id)
    except TuneloopError as exc:  # shown inside the card, not as a whole error page
        return render(request, "_experiment.html", viewer, exp=None, error=exc.message, status=exc.status)
    return render(request, "_experiment.html", viewer, **data)


# ---------------------------------------------------------------- interactions
@router.get("/interactions", response_class=HTMLResponse)
def interactions_page(request: Request, viewer: Viewer = Seen, before: str | None = None,
                      after: str | None = None, limit: int = 50) -> HTMLResponse:
    flt = queries.InteractionFilter.parse(request.query_params)
    page = queries.list_interactions(_db(request), flt, limit=limit, before=before, after=after)
    from tuneloop.registry.versions import Registry

    versions = [v.id for v in Registry(_db(request)).list(limit=200)]
    return render(request, "interactions.html", viewer, nav="interactions", page=page, flt=flt,
                  params=flt.query_params(), versions=versions, feedback_filters=queries.FEEDBACK_FILTERS[1:])


@router.get("/interactions/{interaction_id}", response_class=HTMLResponse)
def interaction_page(request: Request, interaction_id: str, viewer: Viewer = Seen,
                     saved: str = "") -> HTMLResponse:
    data = queries.interaction_detail(_db(request), interaction_id)
    return render(request, "interaction.html", viewer, nav="interactions", saved=bool(saved), **data)


# ---------------------------------------------------------------- versions and datasets
@router.get("/versions", response_class=HTMLResponse)
def versions_page(request: Request, viewer: Viewer = Seen) -> HTMLResponse:
    return render(request, "versions.html", viewer, nav="versions", **queries.version_tree(_db(request)))


@router.get("/versions/{version_id:path}", response_class=HTMLResponse)
def version_page(request: Request, version_id: str, viewer: Viewer = Seen) -> HTMLResponse:
    return render(request, "version.html", viewer, nav="versions", **queries.version_detail(_db(request), version_id))


@router.get("/datasets", response_class=HTMLResponse)
def datasets_page(request: Request, viewer: Viewer = Seen) -> HTMLResponse:
    return render(request, "datasets.html", viewer, nav="datasets", datasets=queries.list_datasets(_db(request)))


# ---------------------------------------------------------------- drift
@router.get("/drift", response_class=HTMLResponse)
def drift_page(request: Request, viewer: Viewer = Seen, kind: str = "") -> HTMLResponse:
    from tuneloop.monitor.reports import KINDS, list_drift_reports

    if kind and kind not in KINDS:
        raise ValidationError(f"kind must be one of {', '.join(KINDS)}", field="kind")
    reports = list_drift_reports(_db(request), kind or None, limit=100)
    return render(request, "drift.html", viewer, nav="drift", reports=reports, kind=kind, kinds=KINDS,
                  summarize=lambda r: drift.summarize({"kind": r.kind, "metrics": r.metrics}))


@router.get("/drift/{report_id}", response_class=HTMLResponse)
def drift_report_page(request: Request, report_id: str, viewer: Viewer = Seen) -> HTMLResponse:
    row = drift.get_report(_db(request), report_id)
    return render(request, "drift_report.html", viewer, nav="drift", report=row, summary=drift.summarize(row))


@router.get("/drift/{report_id}/projection.json")
def drift_projection(request: Request, report_id: str, viewer: Viewer = Seen) -> JSONResponse:
    try:
        return JSONResponse(_state(request).projections.get(report_id))
    except TuneloopError as exc:  # the chart shows the message
        return JSONResponse({"error": exc.message}, status_code=exc.status)
    except ImportError as exc:  # the default embedder needs torch and transformers
        return JSONResponse({"error": f"cannot load the embedder ({exc}); install tuneloop[embed] or pass "
                                      "mount_dashboard(app, embedder=...)"}, status_code=501)


# ---------------------------------------------------------------- loop, golden set
@router.get("/loop", response_class=HTMLResponse)
def loop_page(request: Request, viewer: Viewer = Seen) -> HTMLResponse:
    from tuneloop.loop.cost import cost_report

    db = _db(request)
    return render(request, "loop.html", viewer, nav="loop", runs=queries.loop_timeline(db), cost=cost_report(db, limit=30))


@router.get("/golden", response_class=HTMLResponse)
def golden_page(request: Request, viewer: Viewer = Seen, set_name: str = Query("default", alias="set"),
                done: str = "") -> HTMLResponse:
    from tuneloop.evaluate import golden
    from tuneloop.evaluate.checkers import CHECKERS

    db = _db(request)
    sets = golden.list_sets(db)
    approved = golden.list_examples(db, set_name)
    return render(request, "golden.html", viewer, nav="golden", sets=sets, set_name=set_name, done=done,
                  proposals=golden.list_proposals(db, set_name), approved=approved[-200:],
                  approved_total=len(approved),
                  checkers=sorted(CHECKERS))


# ---------------------------------------------------------------- annotation
@router.get("/annotate", response_class=HTMLResponse)
def annotate_page(request: Request, viewer: Viewer = Seen, last: str = "") -> HTMLResponse:
    db = _db(request)
    item = annotation.next_pair(db)
    progress = annotation.pair_progress(db, viewer.annotator)
    return render(request, "annotate.html", viewer, nav="annotate", item=item, progress=progress, last=last,
                  can_annotate=viewer.can("annotate"))


@router.get("/annotate/rate", response_class=HTMLResponse)
def rate_page(request: Request, viewer: Viewer = Seen, last: str = "") -> HTMLResponse:
    db = _db(request)
    item = annotation.next_rating(db)
    detail = queries.interaction_detail(db, item.interaction_id) if item and item.interaction_id else None
    return render(request, "rate.html", viewer, nav="annotate", item=item, detail=detail, last=last,
                  can_annotate=viewer.can("annotate"))
