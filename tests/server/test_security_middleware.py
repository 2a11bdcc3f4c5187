"""Per-key rate limits (429 + Retry-After), security headers, CORS off unless configured."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tuneloop.config import Settings
from tuneloop.errors import ConfigError
from tuneloop.server.app import create_app
from tuneloop.server.keys import create_key
from tuneloop.server.security import (RateLimiter, SecurityConfig, TokenBucket, install_security,
                                      security_config)


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_token_bucket_refills_at_its_rate_up_to_its_burst():
    b = TokenBucket(rate=2.0, burst=3, now=0.0)
    assert [b.take(0.0) for _ in range(4)] == [0.0, 0.0, 0.0, 0.5]
    assert b.take(0.5) == 0.0           # one token back after 1/rate s
    assert b.take(0.5) == pytest.approx(0.5)
    assert [b.take(100.0) for _ in range(4)][-1] > 0  # never more than the burst, however long idle


def test_rate_limiter_keeps_keys_apart_and_bounds_memory():
    clock = Clock()
    lim = RateLimiter(1.0, 1, max_buckets=2, clock=clock)
    assert lim.check("a") == 0.0 and lim.check("a") == pytest.approx(1.0)
    assert lim.check("b") == 0.0                     # another key has its own bucket
    lim.check("c")                                   # evicts "a" (least recently used)
    assert len(lim._buckets) == 2 and lim.limited == 1


@pytest.fixture
def keys(db):
    return {s: create_key(db, s, name=s).secret for s in ("ingest", "read", "admin")}


def _client(db, **security):
    app = create_app(db=db)
    install_security(app, config=SecurityConfig(**security))
    return TestClient(app)


def test_429_with_retry_after_per_key(db, keys):
    with _client(db, rate_limit_per_s=0.5, rate_limit_burst=2) as c:
        h_read = {"Authorization": f"Bearer {keys['read']}"}
        codes = [c.get("/v1/stats", headers=h_read).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        r = c.get("/v1/stats", headers=h_read)
        assert r.status_code == 429 and r.headers["Retry-After"] == "2"
        assert r.json()["error"]["type"] == "RateLimited" and r.json()["error"]["retry_after"] == 2
        # another key is not affected; no key / a bad key still gets its 401, not a 429
        assert c.get("/v1/models", headers={"Authorization": f"Bearer {keys['ingest']}"}).status_code == 200
        assert c.get("/v1/stats").status_code == 401
        assert c.get("/v1/stats", headers={"Authorization": "Bearer tl_read_nope"}).status_code == 401
        assert c.app.state.rate_limiter.limited == 2


def test_a_limited_write_stores_nothing(db, keys):
    from tuneloop.store import schema

    with _client(db, rate_limit_per_s=0.01, rate_limit_burst=1) as c:
        h = {"Authorization": f"Bearer {keys['ingest']}"}
        body = {"interactions": [{"query": "q", "response": "a"}]}
        assert c.post("/v1/interactions", json=body, headers=h).status_code == 200
        assert c.post("/v1/interactions", json=body, headers=h).status_code == 429
    assert len(db.fetch_all(schema.interactions.select())) == 1


def test_security_headers_on_every_response(db, keys):
    with _client(db) as c:
        for r in (c.get("/healthz"), c.get("/v1/stats"), c.get("/nope"),
                  c.get("/v1/stats", headers={"Authorization": f"Bearer {keys['read']}"})):
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            assert r.headers["X-Frame-Options"] == "DENY"
            assert r.headers["Referrer-Policy"] == "no-referrer"
            assert "Strict-Transport-Security" not in r.headers  # plain http
        assert r.headers["Cache-Control"] == "no-store"          # an authenticated answer
        docs = c.get("/docs")
        assert "cdn.jsdelivr.net" in docs.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in docs.headers["Content-Security-Policy"]
    app = create_app(db=db)
    install_security(app)
    with TestClient(app, base_url="https://testserver") as c:
        assert c.get("/healthz").headers["Strict-Transport-Security"].startswith("max-age=")


def test_html_gets_the_strict_csp(db):
    from fastapi.responses import HTMLResponse

    app = create_app(db=db, insecure_dev=True)

    @app.get("/dashboard", response_class=HTMLResponse)
    def dashboard() -> str:
        return "<html><body>hi</body></html>"

    install_security(app)
    with TestClient(app) as c:
        csp = c.get("/dashboard").headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    assert "frame-ancestors 'none'" in csp


def test_cors_is_off_unless_configured(db):
    origin = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    with _client(db) as c:
        assert "access-control-allow-origin" not in c.get("/healthz", headers=origin).headers
        pre = c.options("/v1/interactions", headers=origin)
        assert "access-control-allow-origin" not in pre.headers
    with _client(db, cors_origins=("https://app.example",)) as c:
        ok = c.options("/v1/interactions", headers={**origin, "Origin": "https://app.example",
                                                    "Access-Control-Request-Headers": "authorization"})
        assert ok.headers["access-control-allow-origin"] == "https://app.example"
        assert "access-control-allow-credentials" not in ok.headers
        assert "access-control-allow-origin" not in c.get("/healthz", headers=origin).headers


@pytest.mark.parametrize("kw, field", [({"rate_limit_per_s": 0}, "rate_limit_per_s"),
                                       ({"rate_limit_burst": 0}, "rate_limit_burst"),
                                       ({"cors_origins": ("*",)}, "cors_origins"),
                                       ({"cors_origins": ("app.example",)}, "cors_origins")])
def test_bad_security_settings_are_clear_errors(kw, field):
    with pytest.raises(ConfigError, match=field):
        SecurityConfig(**kw)


def test_security_config_reads_settings_fields_that_exist():
    assert security_config(Settings()) == SecurityConfig()

    class S:
        cors_origins = "https://a.example, https://b.example"
        rate_limit_per_s = 5.0
        rate_limit_burst = None

    cfg = security_config(S())
    assert cfg.cors_origins == ("https://a.example", "https://b.example") and cfg.burst == 10


def test_insecure_dev_shares_one_anonymous_bucket(db):
    app = create_app(db=db, insecure_dev=True)
    install_security(app, config=SecurityConfig(rate_limit_per_s=0.01, rate_limit_burst=1))
    with TestClient(app) as c:
        assert [c.get("/v1/stats").status_code for _ in range(2)] == [200, 429]
