"""Secrets never logged: every log record of a session that uses keys, good and bad, is
searched for the raw keys (the server with uvicorn's access log, the SDK in remote mode,
the CLI, the key checks)."""
from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time

import httpx
import pytest
from typer.testing import CliRunner

from tuneloop.capture import UsageLogger
from tuneloop.models.scripted import ScriptedBackend
from tuneloop.server.app import create_app
from tuneloop.server.keys import create_key, revoke_key
from tuneloop.server.security import SecurityConfig, install_security


class _Everything(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a bad format must not hide the arguments
            text = f"{record.msg} {record.args}"
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        self.lines.append(f"{record.name}: {text}")


@contextlib.contextmanager
def all_logs():
    """Every record of every logger at DEBUG, uvicorn's and httpx's included."""
    handler = _Everything()
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    touched = []
    for name in ("uvicorn", "uvicorn.access", "uvicorn.error", "httpx", "httpcore", "tuneloop"):
        lg = logging.getLogger(name)
        touched.append((lg, lg.level, lg.propagate))
        lg.setLevel(logging.DEBUG)
        lg.propagate = True
    try:
        yield handler.lines
    finally:
        root.removeHandler(handler)
        root.setLevel(old)
        for lg, level, propagate in touched:
            lg.setLevel(level)
            lg.propagate = propagate


@contextlib.contextmanager
def live_server(app):
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="debug",
                                           access_log=True, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def secrets(db):
    keys = {s: create_key(db, s, name=s).secret for s in ("ingest", "read", "admin")}
    old = create_key(db, "ingest", name="old")
    revoke_key(db, old.key.id)
    keys["revoked"] = old.secret
    keys["unknown"] = "tl_admin_" + "Z" * 32  # well-formed, never issued
    return keys


def test_no_raw_key_in_any_log_record(db, secrets, tmp_path):
    app = create_app(db=db, backends={"m": ScriptedBackend({}, default="hello")})
    install_security(app, config=SecurityConfig(rate_limit_per_s=50, rate_limit_burst=5))
    with all_logs() as lines:
        with live_server(app) as url, httpx.Client(base_url=url) as http:
            for name, key in secrets.items():
                h = {"Authorization": f"Bearer {key}"}
                http.post("/v1/interactions", json={"query": "q", "response": "a"}, headers=h)
                http.post("/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
                          headers=h)
                http.get("/v1/stats", headers=h)
                http.get("/v1/audit", headers=h)
                for _ in range(7):  # into the rate limit
                    http.get("/v1/models", headers=h)
                http.get("/v1/stats", headers={"Authorization": key})  # wrong scheme
            # the SDK in remote mode with a good, a revoked and a read-only key
            for name in ("ingest", "revoked", "read"):
                lg = UsageLogger(endpoint=url, api_key=secrets[name], spool_path=tmp_path / f"{name}.jsonl",
                                 max_attempts=1, flush_interval=0.05)
                lg.log(query="q", response="a")
                lg.flush(timeout=10)
                lg.close(timeout=5)
        result = CliRunner().invoke(__import__("tuneloop.cli", fromlist=["app"]).app,
                                    ["--db", str(db.url.render_as_string(hide_password=False)), "keys", "list"])
        assert result.exit_code == 0
    assert any("uvicorn" in ln for ln in lines) and any("401" in ln or "403" in ln for ln in lines)
    text = "\n".join(lines)
    for name, key in secrets.items():
        assert key not in text, f"the {name} key appears in a log record"
        assert key[len("tl_ingest_"):] not in text
    assert secrets["admin"] not in result.output


def test_error_bodies_name_the_prefix_never_the_key(db, secrets):
    from fastapi.testclient import TestClient

    with TestClient(create_app(db=db)) as c:
        r = c.get("/v1/stats", headers={"Authorization": f"Bearer {secrets['ingest']}"})
    assert r.status_code == 403 and secrets["ingest"] not in r.text
    assert secrets["ingest"][:16] in r.text  # the prefix, to tell keys apart
