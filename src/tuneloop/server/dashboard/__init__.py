"""The web dashboard and the annotation UI, served under ``/dashboard``.

Server-rendered Jinja2 pages with htmx (vendored under ``static/``, no CDN): overview
(champion, challenger, live experiment, satisfaction trend), interactions browser,
versions with lineage, datasets, drift reports with a 2-D projection, loop runs as a
timeline, golden-set review, and annotation (pairwise preferences, 1-5 ratings).

>>> from tuneloop.server.app import create_app
>>> app = create_app("sqlite:///:memory:", insecure_dev=True)
>>> mount_dashboard(app)
>>> from fastapi.testclient import TestClient
>>> "Overview" in TestClient(app).get("/dashboard/").text
True

Sign in with an API key (read scope sees everything, admin acts); see
:mod:`tuneloop.server.dashboard.web` for sessions, CSRF and the security headers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from tuneloop.server.dashboard.annotation import (CHOICES, PairItem, PairProgress, QueueResult, next_pair,
                                                  pair_progress, queue_pairs, record_choice, record_rating)
from tuneloop.server.dashboard.drift import EmbedderChoice, projection_for_report
from tuneloop.server.dashboard.overview import DashboardCache
from tuneloop.server.dashboard.projection import Projection, ProjectionCache, pca_2d
from tuneloop.server.dashboard.web import HERE, PREFIX, SecurityHeaders, Sessions

__all__ = ["CHOICES", "DashboardState", "PairItem", "PairProgress", "Projection", "QueueResult", "mount_dashboard",
           "next_pair", "pair_progress", "pca_2d", "queue_pairs", "record_choice", "record_rating"]


@dataclass
class DashboardState:
    """What the dashboard keeps per app (``app.state.dashboard``)."""

    sessions: Sessions
    cache: DashboardCache
    projections: ProjectionCache


def mount_dashboard(app: FastAPI, *, embedder: Any = None, projection_sample: int = 400) -> None:
    """Add the dashboard to an app made by :func:`tuneloop.server.app.create_app`.

    ``embedder`` (anything with ``encode(texts)``) draws the drift projections; by default
    a report's own hashing embedder or all-MiniLM-L6-v2, loaded on first use. Call before
    the app starts (it adds a middleware).
    """
    from tuneloop.server.dashboard import actions, views

    db = app.state.db
    choose = EmbedderChoice(embedder)
    app.state.dashboard = DashboardState(
        sessions=Sessions(db), cache=DashboardCache.for_db(db),
        projections=ProjectionCache(lambda rid: projection_for_report(db, rid, choose, sample=projection_sample)))
    app.add_middleware(SecurityHeaders, prefix=PREFIX)
    app.mount(PREFIX + "/static", StaticFiles(directory=str(HERE / "static")), name="dashboard-static")
    app.include_router(views.router)
    app.include_router(actions.router)

    @app.get(PREFIX, include_in_schema=False)
    def dashboard_root() -> RedirectResponse:
        return RedirectResponse(PREFIX + "/", status_code=307)

    if not any(getattr(r, "path", None) == "/" for r in app.routes):
        @app.get("/", include_in_schema=False)
        def root() -> RedirectResponse:
            return RedirectResponse(PREFIX + "/", status_code=307)
