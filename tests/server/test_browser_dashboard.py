"""The dashboard in a real browser: Playwright driving Debian's Chromium against a uvicorn
server on a free port. Screenshots go to ``test-artifacts/dashboard/``.

Chromium comes from the OS (``apt-get install -y chromium``, ``make browser``), never from
``playwright install``. Every page must load without a console error: a CSP violation
(an inline script or style) shows up there and fails the test.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

pytest.importorskip("playwright.sync_api", reason="playwright is a dev dependency")
from playwright.sync_api import expect, sync_playwright  # noqa: E402

from tuneloop.datasets.generator import DataGeneratorConfig, TrainingDataGenerator  # noqa: E402
from tuneloop.models.embed import HashingEmbedder  # noqa: E402
from tuneloop.server.app import create_app  # noqa: E402
from tuneloop.server.dashboard import mount_dashboard  # noqa: E402
from tuneloop.store import schema  # noqa: E402

CHROMIUM = os.environ.get("TUNELOOP_CHROMIUM", "/usr/bin/chromium")
if not os.path.exists(CHROMIUM):
    pytest.skip(f"no Chromium at {CHROMIUM}: run `make browser` (apt-get install -y chromium)",
                allow_module_level=True)

pytestmark = pytest.mark.xdist_group("browser")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"
_spec = importlib.util.spec_from_file_location("dashboard_pages_seed", Path(__file__).with_name("test_dashboard_pages.py"))
_pages = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_pages)
seed_store = _pages.seed_store


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                              args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture
def server(db, tmp_path):
    """A real uvicorn server on a free port, in a thread, over the seeded store."""
    import uvicorn

    world = seed_store(db, tmp_path)
    app = create_app(db=db)
    mount_dashboard(app, embedder=HashingEmbedder(dim=32))
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    port = srv.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", world
    srv.should_exit = True
    thread.join(timeout=10)


class Session:
    """A browser context signed in with one key; collects console errors."""

    def __init__(self, browser, base: str, key: str, name: str) -> None:
        self.base, self.name, self.errors = base, name, []
        self.context = browser.new_context(viewport={"width": 1360, "height": 900})
        self.page = self.context.new_page()
        self.page.set_default_timeout(15_000)
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(f"{m.text} at {m.location}"))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("response", lambda r: r.status == 404 and self.errors.append(f"404 {r.url}"))
        self.page.goto(base + "/dashboard/")
        expect(self.page.locator("h1")).to_have_text("Sign in")
        self.page.fill("#key", key)
        self.page.click("button[type=submit]")
        expect(self.page.locator("h1")).to_have_text("Overview")

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{self.name}-{name}.png"), full_page=True)

    def nav(self, label: str, heading: str) -> None:
        self.page.click(f"nav.mainnav a:text-is('{label}')")
        expect(self.page.locator("h1").first).to_have_text(heading)

    def close(self) -> None:
        self.context.close()


def _charts_drawn(page, n: int) -> None:
    page.wait_for_function(
        "n => [...document.querySelectorAll('canvas')].filter(c => window.Chart && Chart.getChart(c)).length >= n", arg=n)


def test_every_page_with_a_read_key(browser, server, keys):
    base, world = server
    s = Session(browser, base, keys["read"], "read")
    page = s.page
    expect(page.locator("#experiment")).to_contain_text("lift in positive feedback rate")
    _charts_drawn(page, 2)
    s.shot("overview")
    s.nav("Interactions", "Interactions")
    expect(page.locator("table.interactions tbody tr")).to_have_count(50)
    page.select_option("select[name=feedback]", "negative")
    page.click("form.filters button[type=submit]")
    page.wait_for_url(re.compile(r"feedback=negative"))
    rows = page.locator("table.interactions tbody tr")
    expect(rows.first.locator(".chip.bad").first).to_be_visible()  # thumbs down, a low rating or a report
    assert rows.count() == rows.filter(has=page.locator(".chip.bad")).count() > 0
    s.shot("interactions-negative")
    page.locator("table.interactions tbody tr td.qa a").first.click()
    expect(page.locator("h1")).to_have_text("Interaction")
    expect(page.locator(".conversation .role-system")).to_contain_text("helpful support agent")
    s.shot("interaction")
    s.nav("Versions", "Versions")
    page.click("a.vid:text-is('v2')")
    expect(page.locator("ol.lineage")).to_contain_text("v1")
    s.shot("version")
    s.nav("Datasets", "Datasets")
    expect(page.locator("table tbody tr")).to_have_count(1)
    s.shot("datasets")
    s.nav("Drift", "Drift and monitoring")
    s.shot("drift")
    page.click("table tr:has(.badge:text-is('embedding')) a")
    expect(page.locator("[data-projection-note]")).to_contain_text("embedded with hashing-32")
    _charts_drawn(page, 1)
    s.shot("drift-embedding")
    s.nav("Loop", "Learning loop")
    expect(page.locator("svg.bar rect")).to_have_count(6)
    s.shot("loop")
    s.nav("Golden set", "Golden set")
    expect(page.locator("article.proposal").first).to_contain_text("Reviewing needs an admin key")
    expect(page.locator("button[data-action=approve]")).to_have_count(0)
    s.shot("golden")
    s.nav("Annotate", "Annotate")
    expect(page.locator(".progress-text")).to_contain_text("0 of 4 pairs done")
    s.shot("annotate")
    page.click("nav.tabs a:text-is('Rate answers')")
    expect(page.locator("#pair")).to_be_visible()
    assert s.errors == [], s.errors
    s.close()


def test_annotate_three_pairs_and_they_become_dpo_pairs(browser, server, keys, db, tmp_path):
    base, _ = server
    s = Session(browser, base, keys["admin"], "admin")
    page = s.page
    s.nav("Annotate", "Annotate")
    picked = {}
    for k, choice in enumerate(("a", "b", "a")):
        expect(page.locator(".progress-text")).to_contain_text(f"{k} of 4 pairs done")
        prompt = page.locator("#pair .conversation .role-user .content").inner_text()
        answers = page.locator("#pair .answer .content").all_inner_texts()
        picked[prompt] = (answers[0], answers[1]) if choice == "a" else (answers[1], answers[0])
        if k == 0:
            s.shot("annotate-pair")
        if k == 1:
            page.keyboard.press("2")  # the keyboard shortcut for "B is better"
        else:
            page.click(f"#pair button[value={choice}]")
        expect(page.locator(".flash.ok")).to_contain_text("B is better" if choice == "b" else "A is better")
    expect(page.locator(".progress-text")).to_contain_text("3 of 4 pairs done")
    s.shot("annotate-progress")
    cfg = DataGeneratorConfig(kind="dpo", format_type="standard", dpo_sources=("annotations",),
                              min_quality_score=None, leak_guard=False, llamafactory_info=False)
    out = tmp_path / "dpo.jsonl"
    result = TrainingDataGenerator(db, cfg).generate(out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert result.final_count == 3
    assert {r["prompt"]: (r["chosen"], r["rejected"]) for r in rows} == picked
    assert s.errors == [], s.errors
    s.close()


def test_golden_case_approved_by_admin_and_refused_to_a_read_key(browser, server, keys, db):
    base, world = server
    g = schema.golden_examples

    def status(case: str) -> str:
        return db.scalar(sa.select(g.c.status).where(g.c.id == case))

    admin = Session(browser, base, keys["admin"], "admin")
    admin.nav("Golden set", "Golden set")
    first, second = world["proposals"][:2]
    card = admin.page.locator(f"#case-{first}")
    card.locator("textarea[name=expected]").fill("Open Settings")
    card.locator("select[name=checker]").select_option("contains")
    admin.shot("golden-review")
    card.locator("button[data-action=approve]").click()
    expect(admin.page.locator(".flash.ok")).to_contain_text(f"Approved {first}")
    expect(admin.page.locator(f"#case-{first}")).to_have_count(0)
    assert status(first) == "approved"
    admin.shot("golden-approved")
    assert admin.errors == [], admin.errors
    admin.close()

    reader = Session(browser, base, keys["read"], "read")
    reader.nav("Golden set", "Golden set")
    token = json.loads(reader.page.locator("body").get_attribute("hx-headers"))["X-CSRF-Token"]
    form = {"csrf": token, "decision": "approve", "expected": "x", "checker": "contains"}
    response = reader.page.request.post(f"{base}/dashboard/golden/{second}/review", form=form, max_redirects=0)
    assert response.status == 403 and status(second) == "proposed"
    # The same as a plain form post from the page: the browser shows the 403 page.
    reader.page.evaluate("""([url, fields]) => {
        const f = document.createElement('form'); f.method = 'post'; f.action = url;
        for (const [k, v] of Object.entries(fields)) {
            const i = document.createElement('input'); i.type = 'hidden'; i.name = k; i.value = v; f.appendChild(i);
        }
        document.body.appendChild(f); f.submit();
    }""", [f"/dashboard/golden/{second}/review", form])
    expect(reader.page.locator("h1")).to_have_text("Not allowed")
    expect(reader.page.locator(".error-card")).to_contain_text("Your key has scope 'read'; this action needs 'admin'")
    reader.shot("golden-403")
    assert status(second) == "proposed"
    reader.close()


def test_explicit_feedback_with_stars_and_a_comment(browser, server, keys, db):
    base, world = server
    s = Session(browser, base, keys["admin"], "admin")
    page = s.page
    target = world["interactions"][2]
    page.goto(f"{base}/dashboard/interactions/{target['id']}")
    page.click("label[for=star4]")
    expect(page.locator("#star4")).to_be_checked()
    page.fill(".rating-form textarea[name=comment]", "Right steps, but too long.")
    s.shot("interaction-rate")
    page.click(".rating-form button[type=submit]")
    expect(page.locator(".flash.ok")).to_contain_text("your rating was saved")
    expect(page.locator("table.compact")).to_contain_text("Right steps, but too long.")
    f = schema.feedback
    rows = db.fetch_all(sa.select(f.c.kind, f.c.value, f.c.text).where(f.c.interaction_id == target["id"],
                                                                       f.c.source == "annotator"))
    assert sorted((r["kind"], r["value"], r["text"]) for r in rows) == [
        ("comment", None, "Right steps, but too long."), ("rating", 4.0, None)]
    s.shot("interaction-rated")
    assert s.errors == [], s.errors
    s.close()
