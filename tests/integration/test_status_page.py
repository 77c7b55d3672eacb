"""GET /status counts what happened; the console's overview at / shows the same numbers in a real headless Chromium."""

from __future__ import annotations

import random

import pytest

from tests.support import browser
from tests.support.browser import log_in
from tests.support.load import post_all
from tests.support.payloads import random_payload
from tests.support.stack import isolated_stack
from tests.support.waiting import wait_for

#: Page element id -> how to find the same number in GET /status.
SHOWN = {
    "queue-depth": lambda s: s["queues"]["ingest"]["ready"],
    "delayed": lambda s: s["queues"]["ingest"]["delayed"],
    "messages-per-second": lambda s: s["messages_per_second"],
    "rows-written": lambda s: s["rows_written"],
    "messages-written": lambda s: s["messages_written"],
    "duplicates": lambda s: s["duplicates"],
    "retries": lambda s: s["retries"],
    "dead-letters": lambda s: s["dead_letters"],
    "workers": lambda s: s["workers"],
    "tasks-depth": lambda s: s["queues"]["tasks"]["ready"],
}


@pytest.fixture(scope="module")
def loaded_stack(tmp_path_factory):
    """A stack that wrote known messages, retried one poison message once and dead-lettered it."""
    workdir = tmp_path_factory.mktemp("status")
    with isolated_stack(
        workdir,
        "status",
        processes=2,
        threads=4,
        worker_extra_modules="tests.support.poison",
        poison_fixed=str(workdir / "never-fixed"),
        max_retries="1",
        min_backoff_ms="50",
        max_backoff_ms="100",
    ) as stack:
        stack.start()
        rng = random.Random(21)
        good = [random_payload(rng, frame_bytes=256) for _ in range(40)]
        poison = random_payload(rng, frame_bytes=64) | {"device_id": "poison-device"}
        answers = post_all(f"{stack.base_url}/api", [*good, poison], key=stack.admin_key)
        assert {answer.status for answer in answers} == {202}
        stack.expected = {
            "accepted": len(good) + 1,
            "rows_written": sum(len(p["data"]["preds"]) for p in good),
            "messages_written": len(good),
            "retries": 1,
            "dead_lettered": 1,
            "dead_letters": 1,
            "duplicates": 0,
            "workers": 2,
        }
        yield stack


def status(stack) -> dict:
    response = stack.http.get("/status", timeout=10)
    assert response.status_code == 200
    return response.json()


def test_status_counts_rows_messages_retries_dead_letters_and_workers(loaded_stack):
    expected = loaded_stack.expected
    # The queue's figures are awaited too: the workers report what they hold once a second, so the
    # retry a delay queue held may still be counted a moment after the totals saw it dead-lettered.
    ingest = {"ready": 0, "unacked": 0, "consumers": 2, "delayed": 0, "dead_letters": 1, "oldest_ready_seconds": 0.0}
    settled = wait_for(
        lambda: ((body := status(loaded_stack)) and {k: body[k] for k in expected} == expected
                 and body["queues"]["ingest"] == ingest and body),
        timeout=60,
        what=lambda: f"GET /status to reach {expected} and ingest {ingest} (now: {status(loaded_stack)})",
    )
    assert set(settled["queues"]) == {"ingest", "tasks", "training", "predictions"}
    assert settled["rabbitmq"] == "ok" and settled["redis"] == "ok"
    listed = loaded_stack.http.get("/dead-letters", timeout=10).json()
    assert listed["count"] == settled["dead_letters"], "the page's dead letters are the ones the API lists"


def test_messages_per_second_reflects_recent_writes_then_decays(loaded_stack):
    rng = random.Random(31)
    assert {a.status for a in post_all(f"{loaded_stack.base_url}/api", [random_payload(rng, frame_bytes=64)
                                                                          for _ in range(30)], key=loaded_stack.admin_key)} == {202}
    wait_for(lambda: status(loaded_stack)["messages_per_second"] > 0, timeout=30, what="a non-zero rate")
    wait_for(lambda: status(loaded_stack)["messages_per_second"] == 0, timeout=30, what="the rate to fall to 0")


@pytest.fixture(scope="module")
def chromium_page():
    with browser.chromium_page() as page:
        yield page


@pytest.mark.browser
def test_the_page_asks_for_a_key_and_shows_nothing_to_a_key_without_admin(loaded_stack, chromium_page):
    page = chromium_page
    page.goto(loaded_stack.base_url + "/", wait_until="load")
    page.wait_for_selector("#login:not([hidden])", timeout=10_000)
    assert "needs an API key" in page.inner_text("#login-reason")
    log_in(page, loaded_stack.add_key("page-reader", "read"))
    wait_for(lambda: "lacks the scope 'admin'" in page.inner_text("#view-overview .refused"), timeout=10,
             what="the overview to say the key lacks the admin scope")
    assert page.get_attribute("#rows-written", "data-value") in (None, ""), "no numbers for a non-admin key"
    assert page.evaluate("sessionStorage.getItem('ingest-api-key')") is not None, "kept in this tab only"
    page.click("#forget")
    assert page.evaluate("sessionStorage.getItem('ingest-api-key')") is None


@pytest.mark.browser
def test_the_page_shows_the_numbers_of_the_api_and_keeps_them_live(loaded_stack, chromium_page):
    page = chromium_page
    external = []
    page.on("request", lambda request: external.append(request.url) if not request.url.startswith(
        loaded_stack.base_url) else None)
    page.goto(loaded_stack.base_url + "/", wait_until="load")
    assert page.title() == "Detections ingest: console"
    log_in(page, loaded_stack.admin_key)

    def number(value) -> float | None:
        return None if value in (None, "") else float(value)

    def on_page() -> dict:
        return {element: number(page.get_attribute(f"#{element}", "data-value")) for element in SHOWN}

    def from_api() -> dict:
        body = status(loaded_stack)
        return {element: number(find(body)) for element, find in SHOWN.items()}

    # Both refresh about once a second: wait until they agree and the load has settled.
    shown = wait_for(
        lambda: (shown := on_page()) == from_api() and None not in shown.values()
        and shown["messages-per-second"] == 0 and shown,
        timeout=60,
        what=lambda: f"the page to show the API's numbers (now: page {on_page()}, API {from_api()})",
    )
    assert int(shown["rows-written"]) >= loaded_stack.expected["rows_written"] > 0
    visible = page.inner_text("#rows-written").replace(",", "")
    assert float(visible) == shown["rows-written"], "the number people see is the same"
    assert "alert" in (page.get_attribute("#dead-letters", "class") or ""), "dead letters are flagged"
    assert page.inner_text("#rabbitmq") == "ok" and page.inner_text("#redis") == "ok"
    assert page.inner_text("#sink") == "ok"  # no worker is waiting out its disk

    # Live: more rows arrive and the page follows, without a reload.
    more = random_payload(random.Random(99), frame_bytes=64)
    # httpx, not post_all: Playwright's sync API already runs an event loop in this thread.
    assert loaded_stack.http.post("/api", json=more, timeout=10).status_code == 202
    target = str(int(shown["rows-written"]) + len(more["data"]["preds"]))
    wait_for(lambda: page.get_attribute("#rows-written", "data-value") == target, timeout=30,
             what="the page to show the new rows without a reload")
    assert external == [], f"the page must need nothing from outside the API: {external}"
