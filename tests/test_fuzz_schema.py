"""schemathesis against the running server's OpenAPI schema: no 5xx, no answer that breaks it.

A real uvicorn serves the app (gateway on a scripted backend, ingestion, privacy admin
routes, security middleware) on loopback, in a thread. Every operation of its
``/openapi.json`` gets schema-valid and schema-violating requests (bounded: ``EXAMPLES``
each, derandomized so CI repeats), once without keys (insecure dev) and once with an
admin key - where schemathesis also checks that bad credentials are refused.

Checks: no server error; status codes, content types, headers and bodies as documented.
Left out: ``positive_data_acceptance`` (the API checks semantics the schema cannot say,
e.g. "give query or messages") and ``negative_data_rejection`` (unknown query parameters
are ignored, as in most HTTP APIs, rather than refused).
"""
from __future__ import annotations

import contextlib
import os
import socket
import threading
import time

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402

from tuneloop.models.scripted import ScriptedBackend  # noqa: E402
from tuneloop.server.app import create_app  # noqa: E402
from tuneloop.server.keys import create_key  # noqa: E402
from tuneloop.server.security import install_security  # noqa: E402

EXAMPLES = int(os.environ.get("TUNELOOP_FUZZ_EXAMPLES", "12"))  # per operation and generation mode
SKIPPED_CHECKS = ("positive_data_acceptance", "negative_data_rejection")


@contextlib.contextmanager
def live_server(app):
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def build_app(db, insecure_dev: bool):
    from fastapi.routing import iter_route_contexts

    from tuneloop.privacy import api as privacy_api

    app = create_app(db=db, insecure_dev=insecure_dev, backends={"m": ScriptedBackend({}, default="an answer")})
    if not any(r.path_format == "/v1/audit" for r in iter_route_contexts(app.routes)):
        app.include_router(privacy_api.router)  # until app.py includes it
    install_security(app, app.state.settings)
    return app


def fuzz(url: str, headers: dict, *, skip: tuple[str, ...]) -> tuple[list[str], int]:
    """Run every operation; return the failures (one line each) and the number of requests."""
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    excluded = [getattr(schemathesis.checks, name) for name in skip]
    failures: list[str] = []
    sent = 0
    for result in schema.get_all_operations():
        op = result.ok()
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                      phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy(generation_mode=mode))
            def run(case):
                nonlocal sent
                sent += 1
                response = case.call(base_url=url, headers=headers, timeout=30)
                try:
                    case.validate_response(response, headers=headers, excluded_checks=excluded)
                except (Exception, BaseExceptionGroup) as exc:  # FailureGroup: one line per failure
                    for sub in getattr(exc, "exceptions", [exc]):
                        failures.append(f"{op.label} [{mode.value}] -> {response.status_code}: "
                                        f"{str(sub).splitlines()[0]} | {case.as_curl_command(headers=headers)[:300]}")

            try:
                run()
            except Unsatisfiable:  # e.g. no schema-violating request exists for GET /healthz
                pass
    return failures, sent


@pytest.mark.parametrize("mode", ["insecure_dev", "admin_key"])
def test_schemathesis_finds_no_server_error_and_no_schema_break(db, mode):
    insecure = mode == "insecure_dev"
    app = build_app(db, insecure)
    headers = {} if insecure else {"Authorization": f"Bearer {create_key(db, 'admin').secret}"}
    skip = SKIPPED_CHECKS + (("ignored_auth",) if insecure else ())
    started = time.monotonic()
    with live_server(app) as url:
        failures, sent = fuzz(url, headers, skip=skip)
    assert sent >= 8 * EXAMPLES, sent  # every operation was exercised
    assert not failures, "\n".join(sorted(set(failures))[:20])
    assert time.monotonic() - started < 120
