"""The dashboard page, driven in a real browser against the demo app on a real server.

The demo (with ``audit_app`` mounted at /audit) runs under uvicorn on a free
port over a temporary SQLite file; Debian's Chromium drives the page through
Playwright. Without Chromium these tests skip, except in CI, where they fail.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount

from support.pgserver import free_port
from whodid import Auditor
from whodid.demo import Demo
from whodid.web import Viewer, audit_app

CHROMIUM = os.environ.get("WHODID_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# The README's screenshots are retaken only when asked, so a test run leaves the
# checkout as it found it:
#   WHODID_SCREENSHOTS=docs python -m pytest tests/test_dashboard.py -k screenshot
SCREENSHOTS = os.environ.get("WHODID_SCREENSHOTS")


def screenshot(page: Any, name: str, tmp_path: Path) -> None:
    """Take the README's screenshot ``name`` (into tmp_path unless WHODID_SCREENSHOTS says)."""
    target = Path(SCREENSHOTS) if SCREENSHOTS else tmp_path
    page.screenshot(path=str(target / name))
    assert (target / name).stat().st_size > 0


API_KEY = {"Authorization": "Bearer sk_live_acme_4f9a2c"}
MAC_CHROME = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
)
EXTRA_CUSTOMERS = 55  # with the seed, more than one page of 50


# -- a real server --------------------------------------------------------------


class LiveServer:
    """An ASGI app under uvicorn in a background thread."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


class DemoSite:
    """The running demo and the ids of the activity the tests created in it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.audit = f"{url}/audit/"
        self.customer = ""  # made by ada, then updated: the drawer's diff
        self.payment = ""  # made by ada in the update's request: a related entry

    def client(self, user: str | None = None) -> httpx.Client:
        cookies = {"session": user} if user else None
        return httpx.Client(base_url=self.url, cookies=cookies, timeout=10)

    def entries(self, user: str, **params: str) -> list[dict[str, Any]]:
        """Every entry the API gives `user`, through its cursor."""
        out: list[dict[str, Any]] = []
        cursor = None
        with self.client(user) as http:
            while True:
                query = {**params, "limit": "200", **({"cursor": cursor} if cursor else {})}
                page = http.get("/audit/audit-logs", params=query).raise_for_status().json()
                out += page["data"]
                cursor = page["next_cursor"]
                if not cursor:
                    return out


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoSite]:
    db = tmp_path_factory.mktemp("dashboard") / "demo.sqlite3"
    with LiveServer(Demo(f"sqlite:///{db}").app()) as server:
        demo = DemoSite(server.url)
        with demo.client() as http:
            for i in range(EXTRA_CUSTOMERS):
                http.post("/customers", json={"email": f"c{i}@example.com"}, headers=API_KEY)
        with demo.client("usr_ada") as http:
            # An update by a person, from a browser, verified with a passkey.
            headers = {
                "User-Agent": MAC_CHROME,
                "X-Passkey": "1",
                "X-Forwarded-For": "81.2.69.160",
                "X-Request-ID": "req_dashboard_update",
            }
            made = http.post(
                "/customers",
                json={
                    "email": "grace@example.com",
                    "name": "Grace Hopper",
                    "profile": {"address": {"city": "Berlin"}, "tags": ["vip"]},
                },
                headers=headers | {"X-Request-ID": "req_dashboard_create"},
            )
            demo.customer = made.json()["id"]
            pay = http.post(
                "/payments",
                json={"customer_id": demo.customer, "amount": "120.00"},
                headers=headers,
            )
            demo.payment = pay.json()["id"]
            http.patch(
                f"/customers/{demo.customer}",
                json={
                    "name": "Grace B. Hopper",
                    "profile": {"address": {"city": "Arlington", "state": "VA"}, "tags": ["vip"]},
                },
                headers=headers,
            ).raise_for_status()
        yield demo


# -- a real browser ---------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (shutil.which(CHROMIUM) or Path(CHROMIUM).exists()):
        message = (
            f"Chromium not found at {CHROMIUM}: install it with "
            "`apt-get install -y chromium chromium-driver`, or set WHODID_CHROMIUM"
        )
        # CI must really test the page; a developer without Chromium may run the rest.
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


@pytest.fixture
def open_page(browser: Any, site: DemoSite) -> Iterator[Any]:
    """open_page(user, query="", ...) -> a dashboard page as `user`, loaded."""
    contexts: list[Any] = []
    errors: list[str] = []

    def open_(
        user: str | None, query: str = "", width: int = 1280, height: int = 860, base: str = ""
    ) -> Any:
        context = browser.new_context(
            viewport={"width": width, "height": height}, accept_downloads=True, locale="en-GB"
        )
        contexts.append(context)
        if user:
            context.add_cookies([{"name": "session", "value": user, "url": site.url}])
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto((base or site.audit) + query)
        wait_ready(page)
        return page

    yield open_
    for context in contexts:
        context.close()
    # The API's refusals are logged by the browser as failed resources; nothing else may be.
    assert [e for e in errors if not re.search(r"status of 40[013]\b", e)] == []


def wait_ready(page: Any) -> None:
    page.wait_for_selector("body[data-state=ready]")


def row_actions(page: Any) -> list[str]:
    return list(page.locator("#rows tr .action").all_inner_texts())


def row_ids(page: Any) -> list[str]:
    return list(page.eval_on_selector_all("#rows tr", "rows => rows.map(r => r.dataset.id)"))


def query_of(page: Any) -> dict[str, str]:
    from urllib.parse import parse_qsl, urlsplit

    return dict(parse_qsl(urlsplit(page.url).query))


def expect() -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect


# -- the list ---------------------------------------------------------------------


def test_owner_sees_the_newest_entries_first_screenshot(open_page, site, tmp_path):
    page = open_page("usr_ada")
    entries = site.entries("usr_ada")
    ids = row_ids(page)
    assert ids == [e["id"] for e in entries[:50]]  # newest first, one page
    assert page.locator("thead th").all_inner_texts() == ["Event", "Actor", "Aggregate", "When"]

    first = page.locator("#rows tr").first
    newest = entries[0]
    assert first.locator(".action").inner_text() == newest["action"] == "customer.update"
    assert first.locator(".badge").inner_text() == "User"
    assert first.locator(".actor-name").inner_text() == "ada@acme.example"
    assert first.locator(".passkey").count() == 1
    assert first.locator(".aggregate").inner_text() == f"customers/{site.customer}"
    when = first.locator("time")
    assert when.inner_text() in ("just now", "1 minute ago", "2 minutes ago")
    assert when.get_attribute("title").endswith("Z")  # UTC, the workspace default
    # An API key shows its prefix, the system its job, an anonymous sign-in attempt as such.
    badges = set(page.locator("#rows .badge").all_inner_texts())
    assert badges >= {"User", "API key"}
    screenshot(page, "dashboard-list.png", tmp_path)


def test_load_more_follows_the_cursor(open_page, site):
    page = open_page("usr_ada")
    expected = [e["id"] for e in site.entries("usr_ada")]
    assert len(expected) > 50
    assert len(row_ids(page)) == 50
    page.click("#load-more")
    wait_ready(page)
    expect()(page.locator("#rows tr")).to_have_count(len(expected))
    assert row_ids(page) == expected
    assert page.locator("#load-more").is_hidden()
    # Keyboard users continue at the first new row, not on a vanished button.
    assert page.evaluate("document.activeElement.dataset.id") == expected[50]


def test_action_filter_is_in_the_url_and_combines(open_page, site):
    page = open_page("usr_ada")
    page.click("#action-menu summary")
    legends = page.locator("#action-groups legend").all_text_contents()
    assert legends == ["Auth", "Customer", "Payment"]  # grouped by domain
    page.check("input[value='payment.update']")
    wait_ready(page)
    assert query_of(page)["action"] == "payment.update"
    expected = [e["id"] for e in site.entries("usr_ada", action="payment.update")]
    assert row_ids(page) == expected and len(expected) >= 2
    assert set(row_actions(page)) == {"payment.update"}
    assert page.locator("#action-summary").inner_text() == "payment.update"

    # AND with a second filter: only the system's updates.
    page.keyboard.press("Escape")
    page.select_option("#f-actor-type", "system")
    wait_ready(page)
    assert query_of(page) == {"action": "payment.update", "actor_type": "system"}
    assert set(page.locator("#rows .badge").all_inner_texts()) == {"System"}


def test_resource_filter_from_the_field_and_from_a_row(open_page, site):
    page = open_page("usr_ada")
    page.fill("#f-entity", site.payment)
    page.press("#f-entity", "Enter")
    wait_ready(page)
    assert query_of(page) == {"entity_id": site.payment}
    assert set(page.locator("#rows .aggregate").all_inner_texts()) == {f"payments/{site.payment}"}
    assert row_actions(page) == ["payment.create"]

    page = open_page("usr_ada")
    page.locator("#rows tr").first.locator(".aggregate").click()
    wait_ready(page)
    assert query_of(page) == {"entity_id": site.customer}
    assert row_actions(page) == ["customer.update", "customer.create"]
    assert page.input_value("#f-entity") == site.customer


def test_search_and_actor_filters(open_page, site):
    page = open_page("usr_ada", "?q=nightly")
    assert set(page.locator("#rows .actor-detail").all_inner_texts()) == {"nightly-settlement"}
    assert page.input_value("#f-q") == "nightly"

    page.fill("#f-q", "")
    page.fill("#f-actor", "usr_ada")
    page.click("button[type=submit]")
    wait_ready(page)
    assert query_of(page) == {"actor_id": "usr_ada"}
    assert set(page.locator("#rows .actor-name").all_inner_texts()) == {"ada@acme.example"}


def test_back_button_restores_the_previous_filters(open_page, site):
    page = open_page("usr_ada")
    everything = row_ids(page)
    page.click("#action-menu summary")
    page.check("input[value='customer.update']")
    wait_ready(page)
    page.keyboard.press("Escape")
    page.fill("#f-entity", "cus_nothing_here")
    page.press("#f-entity", "Enter")
    wait_ready(page)
    expect()(page.locator("#empty-title")).to_have_text("No events match these filters")

    page.go_back()
    wait_ready(page)
    assert query_of(page) == {"action": "customer.update"}
    assert page.input_value("#f-entity") == ""
    assert row_actions(page) == ["customer.update"]
    assert page.locator("#empty").is_hidden()

    page.go_back()
    wait_ready(page)
    assert query_of(page) == {}
    assert row_ids(page) == everything
    page.go_forward()
    wait_ready(page)
    assert row_actions(page) == ["customer.update"]


# -- the drawer ---------------------------------------------------------------------


def test_drawer_shows_an_update_with_its_diff_and_context_screenshot(open_page, site, tmp_path):
    page = open_page("usr_ada", width=1440, height=1200)
    row = page.locator("#rows tr").first
    row.focus()
    page.keyboard.press("Enter")
    drawer = page.locator("#drawer")
    expect()(drawer).to_be_visible()
    expect()(page.locator("#drawer-title")).to_have_text("customer.update")
    assert query_of(page)["entry"] == row.get_attribute("data-id")

    text = drawer.inner_text()
    assert "ada@acme.example" in text and "Verified with a passkey" in text
    assert "81.2.69.160" in text and MAC_CHROME in text
    assert "Chrome 124" in text and "Mac OS X" in text  # the parsed client
    assert "req_dashboard_update" in text
    diff = {
        r.locator("th code").inner_text(): r.locator("td").all_inner_texts()
        for r in drawer.locator("table.diff tbody tr").all()
    }
    assert set(diff) == {"name", "profile.address.city", "profile.address.state"}
    assert "Grace Hopper" in diff["name"][0] and "Grace B. Hopper" in diff["name"][-1]
    assert "Berlin" in diff["profile.address.city"][0]
    assert "Arlington" in diff["profile.address.city"][-1]
    assert "Added" in drawer.locator("tr.diff-added").inner_text()
    assert "Updated: 2 changed, 1 added." in text
    screenshot(page, "dashboard-drawer.png", tmp_path)

    page.keyboard.press("Escape")
    expect()(drawer).to_be_hidden()
    assert page.evaluate("document.activeElement.dataset.id") == row.get_attribute("data-id")
    assert "entry" not in query_of(page)


def test_drawer_links_related_entries_and_the_request(open_page, site):
    page = open_page("usr_ada", f"?entity_id={site.payment}")
    page.locator("#rows tr").first.click()
    expect()(page.locator("#drawer-title")).to_have_text("payment.create")
    related = page.locator("#drawer .related-item")
    expect()(related).to_have_count(1)  # the customer.update of the same request
    related.first.click()
    expect()(page.locator("#drawer-title")).to_have_text("customer.update")

    page.get_by_role("button", name="Every entry of this request").click()
    wait_ready(page)
    expect()(page.locator("#drawer")).to_be_hidden()
    assert query_of(page) == {"entity_id": site.payment, "request_id": "req_dashboard_update"}
    page.get_by_role("button", name="Remove the request filter req_dashboard_update").click()
    wait_ready(page)
    page.get_by_role("button", name="Reset").click()
    wait_ready(page)
    assert query_of(page) == {}
    page.fill("#f-q", "req_dashboard_update")
    page.press("#f-q", "Enter")
    wait_ready(page)
    assert sorted(row_actions(page)) == ["customer.update", "payment.create"]


def test_a_link_to_an_entry_opens_it(open_page, site):
    newest = site.entries("usr_ada")[0]
    page = open_page("usr_ada", f"?entry={newest['id']}")
    expect()(page.locator("#drawer-title")).to_have_text(newest["action"])
    page.click("#drawer-close")
    expect()(page.locator("#drawer")).to_be_hidden()


# -- export, time zones, tenants, roles ------------------------------------------------


def test_export_downloads_the_current_filters_as_csv_and_ndjson(open_page, site):
    page = open_page("usr_ada", "?action=customer.update,payment.create&tz=Asia%2FTokyo")
    href = page.get_attribute("#export-csv", "href")
    assert href.startswith("audit-logs/export.csv?")  # relative: works under any prefix
    page.click("#export-menu summary")
    with page.expect_download() as info:
        page.click("#export-csv")
    download = info.value
    assert download.suggested_filename == "audit-log.csv"
    rows = list(csv.DictReader(io.StringIO(Path(download.path()).read_text("utf-8-sig"))))
    expected = site.entries("usr_ada", action="customer.update,payment.create")
    assert sorted(r["id"] for r in rows) == sorted(e["id"] for e in expected)
    assert {r["tenant_id"] for r in rows} == {"org_acme"}
    assert all(r["occurred_at"].endswith("Z") for r in rows)  # UTC whatever the dashboard shows

    page.click("#export-menu summary")
    with page.expect_download() as info:
        page.click("#export-ndjson")
    lines = Path(info.value.path()).read_text("utf-8").splitlines()
    assert len(lines) == len(expected)


def test_time_zone_choice_is_shown_and_remembered(open_page, site):
    page = open_page("usr_ada")
    page.select_option("#tz", "America/St_Johns")
    wait_ready(page)
    assert query_of(page)["tz"] == "America/St_Johns"
    title = page.locator("#rows tr time").first.get_attribute("title")
    assert title.endswith("-03:30")  # Newfoundland in November
    assert "(America/St_Johns)" in page.inner_text("#status")
    # The choice persists: a plain link opens in the same zone, and says so in its URL.
    page.goto(site.audit)
    wait_ready(page)
    assert page.input_value("#tz") == query_of(page)["tz"] == "America/St_Johns"
    page.select_option("#tz", "UTC")
    wait_ready(page)
    assert "tz" not in query_of(page)


def test_a_view_spans_at_most_a_year(open_page):
    page = open_page("usr_ada", "?from=2024-01-01&to=2026-01-31")
    expect()(page.locator("#form-error")).to_contain_text("at most 1 year")
    assert row_ids(page) == []
    assert "1 year" in page.inner_text("#range-help")


def test_api_errors_show_next_to_the_filters(open_page):
    page = open_page("usr_ada", "?q=" + "x" * 401)
    expect()(page.locator("#form-error")).to_contain_text("longer than 400 characters")
    assert row_ids(page) == []


def test_another_tenant_sees_only_its_own_entries(open_page, site):
    page = open_page("usr_eve")
    globex = site.entries("usr_eve")
    assert globex and {e["tenant_id"] for e in globex} == {"org_globex"}
    assert row_ids(page) == [e["id"] for e in globex]
    acme = {e["id"] for e in site.entries("usr_ada")}
    assert not acme & set(row_ids(page))
    assert "acme" not in page.inner_text("#log")
    page.click("#action-menu summary")
    assert "auth.signin.failed" not in page.inner_text("#action-groups")  # acme's only


def test_a_member_is_told_who_may_read_and_sees_no_data(open_page):
    page = open_page("usr_bob")
    expect()(page.locator("#denied")).to_be_visible()
    assert "owner or admin" in page.inner_text("#denied-title")
    assert page.locator("#rows tr").count() == 0
    assert page.locator("#log").is_hidden() and page.locator("#filters-panel").is_hidden()

    page = open_page(None)
    expect()(page.locator("#denied-title")).to_have_text("Sign in to read the audit log")


def test_an_empty_log_says_so(browser, open_page, tmp_path):
    auditor = Auditor(f"sqlite:///{tmp_path}/empty.db")
    auditor.create_all()
    app = Starlette(
        routes=[Mount("/x/audit", audit_app(auditor, authorize=lambda r: Viewer("t", "owner")))]
    )
    with LiveServer(app) as server:
        page = open_page(None, base=f"{server.url}/x/audit/")  # any mount prefix works
        expect()(page.locator("#empty-title")).to_have_text("No events yet")
        assert page.locator("#load-more").is_hidden()


# -- accessibility ----------------------------------------------------------------------


def test_keyboard_and_labels(open_page):
    page = open_page("usr_ada")
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('input, select, button, summary')]
            .filter(el => el.offsetParent !== null || el.closest('details'))
            .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                          && !el.getAttribute('aria-labelledby') && !el.textContent.trim())
            .map(el => el.outerHTML.slice(0, 80))"""
    )
    assert unlabelled == []

    # Tab reaches the list once; arrows move between rows; Enter opens; Escape returns.
    page.focus("#load-more")
    page.keyboard.press("Shift+Tab")
    for _ in range(5):
        if page.evaluate("document.activeElement.tagName") == "TR":
            break
        page.keyboard.press("Shift+Tab")
    first_row = page.evaluate("document.activeElement.dataset.id")
    assert first_row == row_ids(page)[0]
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    third = row_ids(page)[2]
    assert page.evaluate("document.activeElement.dataset.id") == third
    page.keyboard.press("Enter")
    expect()(page.locator("#drawer")).to_be_visible()
    page.keyboard.press("Escape")
    expect()(page.locator("#drawer")).to_be_hidden()
    assert page.evaluate("document.activeElement.dataset.id") == third


def test_usable_on_a_phone(open_page, site):
    page = open_page("usr_ada", f"?entity_id={site.customer}", width=375)
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    # The filters fold away so the list starts on the first screen.
    assert page.locator("#rows tr").first.bounding_box()["y"] < 860
    assert page.locator("#f-entity").is_hidden()
    toggle = page.get_by_role("button", name="Filters · 1 active")
    toggle.click()
    assert page.input_value("#f-entity") == site.customer and page.locator("#f-entity").is_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    page.locator("#rows tr").first.click()
    expect()(page.locator("#drawer")).to_be_visible()
    box = page.locator("#drawer").bounding_box()
    assert box["width"] <= 375


# -- HTTP side (no browser needed) --------------------------------------------------------


def test_page_assets_and_actions_endpoint(site):
    with site.client("usr_ada") as http:
        page = http.get("/audit/")
        assert page.status_code == 200
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert (
            http.get("/audit/static/js/main.js")
            .headers["content-type"]
            .startswith("text/javascript")
        )
        assert http.get("/audit/static/nope.js").status_code == 404
        actions = http.get("/audit/audit-logs/actions").json()["data"]
        assert actions == sorted(set(actions))
        assert {"customer.create", "customer.update", "auth.signin.failed"} <= set(actions)
        doc = http.get("/audit/openapi.json").json()
        assert "/audit-logs/actions" in doc["paths"]
        # The demo's front page links browsers to the dashboard.
        assert 'href="audit/"' in http.get("/", headers={"Accept": "text/html"}).text
    with site.client("usr_bob") as http:
        assert http.get("/audit/audit-logs/actions").status_code == 403
    with site.client() as http:
        assert http.get("/audit/audit-logs/actions").status_code == 401
        signin = http.get("/signin/usr_eve")
        assert signin.status_code == 303 and signin.headers["location"] == "../audit/"
