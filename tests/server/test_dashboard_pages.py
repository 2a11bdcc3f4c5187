"""The dashboard over HTTP (TestClient, real store): sign-in, every page, permissions, CSRF,
security headers, the interactions browser's filters and keyset pages, drift projections.

``seed_store`` fills a store through the packages (registry, experiments, datasets, golden
set, monitor reports, annotation queue); the browser tests reuse it.
"""
from __future__ import annotations

import re
import time

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from tuneloop.ids import new_id
from tuneloop.models.embed import HashingEmbedder
from tuneloop.models.scripted import ScriptedBackend
from tuneloop.server.app import create_app
from tuneloop.server.dashboard import mount_dashboard, queue_pairs
from tuneloop.server.dashboard.web import COOKIE
from tuneloop.store import schema

DAY = 86400.0
TOPICS = ["reset my password", "cancel my subscription", "update billing address", "export my data",
          "change the language", "delete my account", "invoice for last month", "two factor login"]


def _interactions(t0: float, n: int, exp_id: str) -> tuple[list[dict], list[dict]]:
    rows, fb = [], []
    for k in range(n):
        arm = "treatment" if k % 4 == 0 else "control"
        version = "v2" if arm == "treatment" else "v1"
        iid = f"{k:04d}-{new_id()}"
        ts = t0 + k * (3 * DAY / n)
        query = f"How do I {TOPICS[k % len(TOPICS)]}? (case {k})"
        rows.append({"id": iid, "ts": ts, "user_id": f"user{k % 7}", "session_id": f"s{k % 11}", "version_id": version,
                     "experiment_id": exp_id, "arm": arm, "query": query, "model": "support-bot",
                     "messages": [{"role": "system", "content": "You are a helpful support agent."},
                                  {"role": "user", "content": query}],
                     "response": f"To {TOPICS[k % len(TOPICS)]}, open Settings and follow the steps (answer {k}).",
                     "latency_ms": 120.0 + (k * 37) % 400, "status": "error" if k % 29 == 5 else "ok",
                     "error": "upstream timeout" if k % 29 == 5 else None, "reward": 1.0 if k % 3 else -1.0,
                     "quality_score": 0.5 + (k % 5) / 10, "prompt_tokens": 20, "completion_tokens": 15})
        if k % 3 == 0:
            fb.append({"id": new_id(), "interaction_id": iid, "kind": "thumbs", "value": -1.0 if k % 6 == 0 else 1.0,
                       "source": "user", "ts": ts + 5})
        if k % 5 == 1:
            fb.append({"id": new_id(), "interaction_id": iid, "kind": "rating", "value": float(1 + k % 5),
                       "source": "user", "ts": ts + 6})
    return rows, fb


def _loop_run(t0: float) -> dict:
    states = ["triggered", "dataset_built", "trained", "registered", "gated", "experimenting"]
    history = [[s, t0 + 60 * i * (i + 1)] for i, s in enumerate(states)]
    return {"id": new_id(), "state": "experimenting", "dataset_id": None, "version_id": "v2", "started_at": t0,
            "updated_at": history[-1][1], "details": {"reason": "sample_count: 120 new interactions",
                                                     "history": history, "timings": {"train": 31.5}}}


def seed_store(db, tmp_path, *, n: int = 120, pairs: int = 4) -> dict:
    """A small but complete store; returns the ids the tests look for."""
    from tuneloop.datasets.generator import DataGeneratorConfig, TrainingDataGenerator
    from tuneloop.evaluate import golden
    from tuneloop.experiments.manager import ABTestConfig, ABTestManager
    from tuneloop.monitor.reports import Window, behaviour_report, embedding_drift_report, operations_report
    from tuneloop.registry.versions import Registry

    reg = Registry(db, actor="test")
    reg.register("v1", backend="scripted", base_model="SmolLM2-135M-Instruct")
    reg.promote("v1")
    exp = ABTestManager(db, ABTestConfig(min_duration_hours=0, min_samples_per_version=10)).deploy_challenger(
        "v2", backend="scripted", base_model="SmolLM2-135M-Instruct", parent_id="v1", traffic_weight=0.25)
    t0 = time.time() - 3 * DAY
    rows, fb = _interactions(t0, n, exp.id)
    with db.begin() as conn:
        conn.execute(schema.interactions.insert(), rows)
        conn.execute(schema.feedback.insert(), fb)
        conn.execute(schema.loop_runs.insert(), _loop_run(t0))
    cfg = DataGeneratorConfig(kind="sft", min_quality_score=None, llamafactory_info=False)
    dataset = TrainingDataGenerator(db, cfg).generate(tmp_path / "sft.jsonl")
    proposals = golden.propose_from_feedback(db, limit=5)
    golden.add_example(db, prompt="How do I reset my password?", expected="Settings", checker="contains")
    emb = HashingEmbedder(dim=32)
    mid = t0 + 1.5 * DAY
    embedding_drift_report(db, emb, reference=Window(t0, mid), current=Window(mid, time.time()),
                           methods=("ks", "centroid", "psi"), min_rows=5)
    behaviour_report(db)
    operations_report(db, reference_days=2, current_days=1)
    queue_pairs(db, ScriptedBackend(lambda m: "Short: " + m[-1]["content"][:20]),
                ScriptedBackend(lambda m: "Here is a careful, complete answer about " + m[-1]["content"]),
                prompts=[f"Explain {t} in one paragraph." for t in TOPICS[:pairs]], label_a="v1", label_b="v2")
    return {"experiment": exp.id, "dataset": dataset.dataset_id, "proposals": [p.id for p in proposals],
            "interactions": rows, "feedback": fb}


# ---------------------------------------------------------------- fixtures
@pytest.fixture
def app(db):
    app = create_app(db=db)
    mount_dashboard(app, embedder=HashingEmbedder(dim=32))
    app.state.dashboard.sessions.ttl_s = 0  # revocations take effect at once in tests
    return app


@pytest.fixture
def world(db, tmp_path):
    return seed_store(db, tmp_path)


def client_as(app, key: str | None) -> TestClient:
    c = TestClient(app, base_url="http://testserver")
    if key is not None:
        r = c.post("/dashboard/login", data={"key": key, "next": "/dashboard/"}, follow_redirects=False)
        assert r.status_code == 303, r.text
    return c


def csrf_of(client: TestClient, path: str = "/dashboard/golden") -> str:
    return re.search(r'name="csrf" value="([0-9a-f]+)"', client.get(path).text).group(1)


# ---------------------------------------------------------------- sign-in
def test_pages_need_sign_in_and_the_cookie_is_locked_down(app, keys):
    anon = client_as(app, None)
    r = anon.get("/dashboard/interactions?user=u1", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/dashboard/login?next=/dashboard/interactions%3Fuser%3Du1"
    assert anon.get("/dashboard/", headers={"HX-Request": "true"}).headers["HX-Redirect"].startswith("/dashboard/login")
    r = anon.post("/dashboard/login", data={"key": keys["read"], "next": "https://evil.example/"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/dashboard/"  # no open redirect
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(COOKIE + "=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Path=/dashboard" in cookie and keys["read"] not in cookie  # the raw key never reaches the browser
    assert anon.get("/dashboard/").status_code == 200


@pytest.mark.parametrize("who, status, message", [
    ("garbage", 401, "invalid API key"), ("revoked", 401, "revoked"), ("ingest", 403, "cannot see the dashboard")])
def test_bad_keys_cannot_sign_in(app, keys, who, status, message):
    raw = "tl_read_garbage" if who == "garbage" else keys[who]
    r = client_as(app, None).post("/dashboard/login", data={"key": raw}, follow_redirects=False)
    assert r.status_code == status and message in r.text and COOKIE not in r.headers.get("set-cookie", "")


def test_forged_expired_and_revoked_sessions_are_refused(app, db, keys):
    from tuneloop.server.keys import list_keys, revoke_key

    c = client_as(app, keys["read"])
    value = c.cookies.get(COOKIE)
    key_id, expires, sig = value.split(".")
    for bad in (f"{key_id}.{expires}.{'0' * 64}", f"{key_id}.{int(expires) + 10}.{sig}", f"{key_id}.100.{sig}",
                "nonsense", f"other.{expires}.{sig}"):
        forged = TestClient(app, cookies={COOKIE: bad})
        assert forged.get("/dashboard/", follow_redirects=False).status_code == 303, bad
    assert c.get("/dashboard/", follow_redirects=False).status_code == 200
    revoke_key(db, next(k.id for k in list_keys(db) if k.name == "read"))
    assert c.get("/dashboard/", follow_redirects=False).status_code == 303


def test_sign_out_clears_the_cookie(app, keys):
    c = client_as(app, keys["read"])
    r = c.post("/dashboard/logout", data={}, follow_redirects=False)
    assert r.status_code == 303 and 'tuneloop_session=""' in r.headers["set-cookie"]


# ---------------------------------------------------------------- pages
PAGES = ["/dashboard/", "/dashboard/interactions", "/dashboard/versions", "/dashboard/versions/v2",
         "/dashboard/datasets", "/dashboard/drift", "/dashboard/loop", "/dashboard/golden", "/dashboard/annotate",
         "/dashboard/annotate/rate", "/dashboard/login"]


def test_every_page_renders_for_a_read_key_with_security_headers(app, world, keys):
    c = client_as(app, keys["read"])
    for path in PAGES + [f"/dashboard/interactions/{world['interactions'][3]['id']}",
                         f"/dashboard/fragments/experiment/{world['experiment']}", "/dashboard/static/dashboard.js"]:
        r = c.get(path)
        assert r.status_code == 200, (path, r.text[:500])
        assert "default-src 'self'" in r.headers["content-security-policy"]
        assert "'unsafe-inline'" not in r.headers["content-security-policy"]
        assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "same-origin" and r.headers["server-timing"].startswith("app;dur=")
        if path.endswith(".js"):
            continue
        html = r.text
        # CSP without 'unsafe-inline': no inline script, no inline style, no event handler attributes
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), path
        assert not re.search(r"\sstyle=|<style|\son[a-z]+=", html), path
        assert not re.search(r'(src|href)="(https?:)?//', html), path  # nothing from another site (no CDN)
    assert "/dashboard/static/" in c.get("/dashboard/").text


def test_overview_shows_versions_experiment_and_trend(app, world, keys):
    c = client_as(app, keys["read"])
    html = c.get("/dashboard/").text
    assert ">v1</a>" in html and ">v2</a>" in html  # champion and challenger
    assert f"/dashboard/fragments/experiment/{world['experiment']}" in html
    assert "Satisfaction, last 30 days" in html and 'data-chart=' in html
    n = len(world["interactions"])
    assert f"{n:,} interactions stored" in html
    frag = c.get(f"/dashboard/fragments/experiment/{world['experiment']}").text
    assert "lift in positive feedback rate" in frag and "95% CI" in frag
    assert re.search(r"[+-]\d+\.\d%", frag)


def test_pages_show_their_content(app, world, keys):
    c = client_as(app, keys["read"])
    versions = c.get("/dashboard/versions").text
    assert versions.index(">v1</a>") < versions.index(">v2</a>") and "champion" in versions and "challenger" in versions
    detail = c.get("/dashboard/versions/v2").text
    assert 'href="/dashboard/versions/v1"' in detail  # lineage: parent
    assert world["dataset"][:13] in c.get("/dashboard/datasets").text
    drift = c.get("/dashboard/drift").text
    assert drift.count('href="/dashboard/drift/') == 3 and "embedding" in drift and "operations" in drift
    loop = c.get("/dashboard/loop").text
    assert loop.count('class="seg st-') == 6 and "sample_count" in loop
    golden = c.get("/dashboard/golden").text
    assert all(f"/dashboard/golden/{p}/review" not in golden for p in world["proposals"])  # read key: no forms
    assert "Reviewing needs an admin key" in golden
    annotate = c.get("/dashboard/annotate").text
    assert "0</strong> of 4 pairs done" in annotate and "Which answer is better?" in annotate


def test_interaction_detail_shows_conversation_feedback_and_scores(app, world, keys):
    row = world["interactions"][6]  # k=6: thumbs down
    html = client_as(app, keys["read"]).get(f"/dashboard/interactions/{row['id']}").text
    assert "You are a helpful support agent." in html and row["response"] in html
    assert 'title="thumbs (user)">▼' in html and "support-bot" in html
    assert "Your key can look, not rate" in html


def test_drift_report_pages_and_projection(app, world, keys, db):
    from tuneloop.monitor.reports import list_drift_reports

    c = client_as(app, keys["read"])
    reports = {r.kind: r for r in list_drift_reports(db)}
    emb = reports["embedding"]
    assert 'data-src="/dashboard/drift/%s/projection.json"' % emb.id in c.get(f"/dashboard/drift/{emb.id}").text
    data = c.get(f"/dashboard/drift/{emb.id}/projection.json").json()
    assert len(data["reference"]) == emb.window["reference"]["n"] and len(data["current"]) == emb.window["current"]["n"]
    assert all(len(p) == 2 for p in data["reference"]) and 0 < sum(data["explained_variance_ratio"]) <= 1
    assert data["embedder"] == "hashing-32" and len(data["texts"]["current"]) == len(data["current"])
    bad = c.get(f"/dashboard/drift/{reports['behaviour'].id}/projection.json")
    assert bad.status_code == 422 and "only embedding reports" in bad.json()["error"]
    assert "Satisfaction trend" in c.get(f"/dashboard/drift/{reports['behaviour'].id}").text
    assert "latency_p95_ratio" in c.get(f"/dashboard/drift/{reports['operations'].id}").text
    assert c.get("/dashboard/drift/nope").status_code == 404
    assert c.get("/dashboard/drift?kind=bogus").status_code == 422


# ---------------------------------------------------------------- actions and permissions
def _status(db, example_id):
    g = schema.golden_examples
    return db.scalar(sa.select(g.c.status).where(g.c.id == example_id))


def test_read_key_cannot_act_admin_can(app, world, keys, db):
    case = world["proposals"][0]
    reader = client_as(app, keys["read"])
    form = {"csrf": csrf_of(reader), "decision": "approve", "expected": "Settings", "checker": "contains"}
    r = reader.post(f"/dashboard/golden/{case}/review", data=form, follow_redirects=False)
    assert r.status_code == 403 and "this action needs &#39;admin&#39;" in r.text and _status(db, case) == "proposed"
    item = db.scalar(sa.select(schema.annotations.c.id).where(schema.annotations.c.kind == "pairwise").limit(1))
    r = reader.post(f"/dashboard/annotate/{item}", data={"csrf": form["csrf"], "choice": "a"}, follow_redirects=False)
    assert r.status_code == 403
    admin = client_as(app, keys["admin"])
    form["csrf"] = csrf_of(admin)
    r = admin.post(f"/dashboard/golden/{case}/review", data=form, follow_redirects=False)
    assert r.status_code == 303 and _status(db, case) == "approved"
    again = admin.post(f"/dashboard/golden/{case}/review", data=form)
    assert again.status_code == 409 and "already approved" in again.text
    reject = {"csrf": form["csrf"], "decision": "reject"}
    assert admin.post(f"/dashboard/golden/{world['proposals'][1]}/review", data=reject).status_code == 200
    assert _status(db, world["proposals"][1]) == "rejected"
    g = schema.audit_log
    assert db.scalar(sa.select(g.c.actor).where(g.c.action == "golden.approve")) == "dashboard:admin"


def test_actions_need_a_csrf_token_and_the_same_origin(app, world, keys, db):
    case = world["proposals"][0]
    admin = client_as(app, keys["admin"])
    form = {"decision": "reject"}
    assert admin.post(f"/dashboard/golden/{case}/review", data=form).status_code == 403
    assert admin.post(f"/dashboard/golden/{case}/review", data={**form, "csrf": "0" * 64}).status_code == 403
    token = csrf_of(admin)
    evil = admin.post(f"/dashboard/golden/{case}/review", data={**form, "csrf": token},
                      headers={"Origin": "https://evil.example"})
    assert evil.status_code == 403 and _status(db, case) == "proposed"
    ok = admin.post(f"/dashboard/golden/{case}/review", data=form, headers={"X-CSRF-Token": token})
    assert ok.status_code == 200 and _status(db, case) == "rejected"


def test_annotating_pairs_and_rating_an_interaction(app, world, keys, db):
    admin = client_as(app, keys["admin"])
    token = csrf_of(admin, "/dashboard/annotate")
    for choice in ("a", "b", "skip"):
        page = admin.get("/dashboard/annotate").text
        item = re.search(r'data-pair="([^"]+)"', page).group(1)
        r = admin.post(f"/dashboard/annotate/{item}", data={"csrf": token, "choice": choice})
        assert r.status_code == 200 and "Saved:" in r.text
    assert "3</strong> of 4 pairs done" in admin.get("/dashboard/annotate").text
    an = schema.annotations
    done = db.fetch_all(sa.select(an.c.choice, an.c.status, an.c.annotator).where(an.c.done_at.is_not(None)))
    assert sorted((d["choice"], d["status"], d["annotator"]) for d in done) == [
        ("a", "done", "admin"), ("b", "done", "admin"), ("skip", "skipped", "admin")]
    taken = admin.post(f"/dashboard/annotate/{item}", data={"csrf": token, "choice": "a"})
    assert taken.status_code == 200 and "Someone else answered that pair first" in taken.text
    assert db.scalar(sa.select(an.c.choice).where(an.c.id == item)) == "skip"  # the first answer stands
    assert admin.post(f"/dashboard/annotate/{item}", data={"csrf": token, "choice": "c"}).status_code == 422
    iid = world["interactions"][0]["id"]
    r = admin.post(f"/dashboard/interactions/{iid}/rate", data={"csrf": token, "rating": "5", "comment": "great"})
    assert r.status_code == 200 and "your rating was saved" in r.text
    fb = db.fetch_all(sa.select(schema.feedback).where(schema.feedback.c.source == "annotator"))
    assert sorted((f["kind"], f["value"], f["text"]) for f in fb) == [("comment", None, "great"), ("rating", 5.0, None)]
    assert admin.post(f"/dashboard/interactions/{iid}/rate", data={"csrf": token, "rating": "9"}).status_code == 422


# ---------------------------------------------------------------- interactions browser
def _ids(html: str) -> list[str]:
    ids = re.findall(r'<td class="nowrap"><a href="/dashboard/interactions/([^"]+)">', html)
    return list(dict.fromkeys(ids))


def _cursor(html: str, label: str) -> str | None:
    m = re.search(r'href="/dashboard/interactions\?([^"]*)">' + label, html)
    if not m:
        return None
    return m.group(1).replace("&amp;", "&")


def test_keyset_pages_walk_every_row_once_in_order(app, db, keys):
    t = 1_700_000_000.0
    rows = [{"id": f"r{k:03d}", "ts": t + (k // 3), "query": f"q{k}", "version_id": "v1"} for k in range(130)]
    with db.begin() as conn:  # ties: three rows share each timestamp
        conn.execute(schema.interactions.insert(), rows)
    expected = [r["id"] for r in sorted(rows, key=lambda r: (r["ts"], r["id"]), reverse=True)]
    c = client_as(app, keys["read"])
    html, seen, pages = c.get("/dashboard/interactions?limit=50").text, [], []
    while True:
        pages.append(_ids(html))
        seen += pages[-1]
        query = _cursor(html, "Older")
        if query is None:
            break
        html = c.get(f"/dashboard/interactions?{query}&limit=50").text
    assert seen == expected and [len(p) for p in pages] == [50, 50, 30]
    newer = _cursor(html, "← Newer")
    assert _ids(c.get(f"/dashboard/interactions?{newer}&limit=50").text) == pages[1]
    assert _cursor(c.get("/dashboard/interactions?limit=50").text, "← Newer") is None


def test_filters(app, world, keys):
    c = client_as(app, keys["read"])
    rows, fb = world["interactions"], world["feedback"]

    def ids(query: str) -> set[str]:
        return set(_ids(c.get(f"/dashboard/interactions?limit=500&{query}").text))

    assert ids("version=v2") == {r["id"] for r in rows if r["version_id"] == "v2"}
    assert ids("user=user3") == {r["id"] for r in rows if r["user_id"] == "user3"}
    assert ids("status=error") == {r["id"] for r in rows if r["status"] == "error"}
    negative = {f["interaction_id"] for f in fb if (f["kind"] == "thumbs" and f["value"] < 0)
                or (f["kind"] == "rating" and f["value"] <= 2)}
    assert ids("feedback=negative") == negative
    assert ids("feedback=none") == {r["id"] for r in rows} - {f["interaction_id"] for f in fb}
    assert ids("q=cancel+my") == {r["id"] for r in rows if "cancel my" in r["query"]}
    day = time.strftime("%Y-%m-%d", time.gmtime(rows[0]["ts"]))
    assert ids(f"start={day}&end={day}") == {r["id"] for r in rows if time.strftime("%Y-%m-%d", time.gmtime(r["ts"])) == day}
    assert c.get("/dashboard/interactions?start=yesterday").status_code == 422
    assert c.get("/dashboard/interactions?feedback=bogus").status_code == 422
    assert c.get("/dashboard/interactions?before=garbage").status_code == 422
    assert "No interactions match" in c.get("/dashboard/interactions?user=nobody").text


def test_insecure_dev_mode_needs_no_sign_in(db):
    app = create_app(db=db, insecure_dev=True)
    mount_dashboard(app)
    c = TestClient(app)
    html = c.get("/dashboard/").text
    assert "Overview" in html and 'class="badge scope-admin"' in html
    assert c.get("/", follow_redirects=False).headers["location"] == "/dashboard/"


def test_projection_rebuilds_the_reports_own_hashing_embedder(db, world, keys):
    from tuneloop.monitor.reports import latest_drift

    app = create_app(db=db)
    mount_dashboard(app)  # no embedder given: the report's HashingEmbedder(dim=32) is rebuilt, no model loads
    report = latest_drift(db, "embedding")
    data = client_as(app, keys["read"]).get(f"/dashboard/drift/{report.id}/projection.json").json()
    assert data["embedder"] == "hashing-32" and len(data["reference"]) == report.window["reference"]["n"]
