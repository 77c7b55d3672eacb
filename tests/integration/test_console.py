"""The console at / in a real headless Chromium, each view with data from a real stack.

Every test drives the page as a person would (the key typed in, links and buttons clicked) and
checks what it shows against the API, the CSV or the queues. Each view's test writes its
screenshot to docs/console/, which the README links.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.support import browser
from tests.support.browser import log_in
from tests.support.csv_check import rows_by_key
from tests.support.payloads import random_payload
from tests.support.stack import isolated_stack
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.browser]

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "console"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """Detections with a poison device (fails until a file exists) and a fatal one (never retried),
    the task and model workers, and history sampled every second."""
    workdir = tmp_path_factory.mktemp("console")
    with isolated_stack(workdir, "console", processes=1, threads=4, worker_extra_modules="tests.support.poison",
                        poison_fixed=str(workdir / "fixed"), max_retries="1", min_backoff_ms="50",
                        max_backoff_ms="100", history_sample_seconds="1") as running:
        running.poison_fixed = workdir / "fixed"
        running.start()
        running.start_task_workers()
        running.start_model_workers()
        yield running


@pytest.fixture()
def page(stack):
    with browser.chromium_page() as opened:
        outside = []
        opened.on("request", lambda request: outside.append(request.url)
                  if not request.url.startswith(stack.base_url) else None)
        opened.goto(stack.base_url + "/", wait_until="load")
        log_in(opened, stack.admin_key)
        yield opened
        assert outside == [], f"the console must need nothing from outside the API: {outside}"


def screenshot(page, view: str) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{view}.png"), full_page=True)


def post(stack, payload: dict) -> str:
    answer = stack.http.post("/api", json=payload, timeout=10)
    assert answer.status_code == 202, answer.text
    return answer.json()["message_id"]


def dead_letter(stack, device: str) -> str:
    """A detection of `device` that ends in the dead-letter queue; its id."""
    message_id = post(stack, random_payload(random.Random(device), frame_bytes=64) | {"device_id": device})
    wait_for(lambda: any(letter["message_id"] == message_id for letter in
                         stack.http.get("/dead-letters", params={"limit": 1000}).json()["messages"]),
             timeout=60, what=f"{device}'s message to be dead-lettered")
    return message_id


def chart(page, name: str) -> dict:
    return page.evaluate("""(name) => { const c = document.getElementById('chart-' + name);
        return {points: Number(c.dataset.points || 0), peak: Number(c.dataset.peak || 0), newest: c.dataset.newest}; }""",
                         name)


def test_the_overview_charts_move_under_load(stack, page):
    rng = random.Random(5)
    payloads = [random_payload(rng, frame_bytes=512) for _ in range(400)]
    before = {name: chart(page, name)["points"] for name in ("accepted", "rows", "latency")}

    def load() -> None:  # about 80 requests a second for five seconds
        with httpx.Client(base_url=stack.base_url, headers=stack.auth_headers(stack.admin_key), timeout=10) as client:
            for index, payload in enumerate(payloads):
                client.post("/api", json=payload)
                if index % 8 == 7:
                    time.sleep(0.1)

    sender = threading.Thread(target=load)
    sender.start()
    try:
        wait_for(lambda: chart(page, "accepted")["peak"] > 10 and chart(page, "rows")["peak"] > 10
                 and chart(page, "latency")["peak"] > 0, timeout=60, interval=0.5,
                 what=lambda: f"the charts to show the load (now {[chart(page, n) for n in ('accepted', 'rows', 'latency')]})")
    finally:
        sender.join(timeout=60)
    now = {name: chart(page, name)["points"] for name in ("accepted", "rows", "latency")}
    assert all(now[name] > before[name] for name in now), f"new points without a reload: {before} -> {now}"
    history = stack.http.get("/status/history").json()
    assert max(p["rows_per_second"] or 0 for p in history["points"]) == pytest.approx(chart(page, "rows")["peak"],
                                                                                        rel=0.5)
    screenshot(page, "overview")


def test_the_queues_view_lists_every_queue_with_the_apis_figures(stack, page):
    page.click("nav#views a[href='#queues']")
    page.wait_for_selector("#queues-table tbody tr[data-queue='predictions']", timeout=10_000)
    shown = page.evaluate("""() => Object.fromEntries([...document.querySelectorAll('#queues-table tbody tr')].map(
        (row) => [row.dataset.queue, row.querySelector("[data-field='consumers']").textContent]))""")
    queues = stack.http.get("/status").json()["queues"]
    assert set(shown) == set(queues) == {"ingest", "tasks", "training", "predictions"}
    assert {name: int(text) for name, text in shown.items()} == {name: q["consumers"] for name, q in queues.items()}
    assert all(int(text) >= 1 for text in shown.values()), "every queue has its worker group"

    # A running task is held by its worker: unacked, which RabbitMQ's passive declare cannot tell.
    assert stack.http.post("/tasks", json={"seconds": 5}, timeout=10).status_code == 202
    held = "#queues-table tr[data-queue='tasks'] [data-field='unacked']"
    wait_for(lambda: page.inner_text(held) == "1", timeout=15, interval=0.2,
             what=lambda: f"the running countdown to show as unacked (it shows {page.inner_text(held)!r})")
    assert stack.http.get("/status").json()["queues"]["tasks"]["unacked"] == 1
    screenshot(page, "queues")
    wait_for(lambda: page.inner_text(held) == "0", timeout=30, what="the countdown to be acked")


def test_a_dead_letter_replayed_from_the_page_has_its_rows_written_once(stack, page):
    message_id = dead_letter(stack, "poison-device")
    page.click("nav#views a[href='#dead-letters']")
    row = f"#dl-table tr[data-message-id='{message_id}']"
    page.wait_for_selector(row, timeout=15_000)
    assert "DownstreamFault" in page.inner_text(row)
    assert page.is_disabled("#dl-replay-selected"), "nothing to replay before a choice"
    page.check(f"{row} input[type=checkbox]")
    screenshot(page, "dead-letters")
    stack.poison_fixed.write_text("fixed")  # the operator's fix, then the replay
    page.click("#dl-replay-selected")
    wait_for(lambda: page.inner_text("#result-line").startswith("Replayed 1 of 1 selected"), timeout=30,
             what=lambda: f"the page to say it replayed it (it says {page.inner_text('#result-line')!r})")
    rows = wait_for(lambda: [rows for (mid, _), rows in rows_by_key(stack.csv_path).items() if mid == message_id],
                    timeout=60, what="the replayed message's rows in the CSV")
    assert all(len(copies) == 1 for copies in rows)
    page.wait_for_selector(row, state="detached", timeout=15_000)


def test_a_discard_asks_first_and_then_removes_the_dead_letter_for_good(stack, page):
    message_id = dead_letter(stack, "fatal-device")
    page.click("nav#views a[href='#dead-letters']")
    row = f"#dl-table tr[data-message-id='{message_id}']"
    page.wait_for_selector(row, timeout=15_000)
    page.check(f"{row} input[type=checkbox]")
    asked = []

    def answer(dialog) -> None:
        asked.append(dialog.message)
        dialog.dismiss() if len(asked) == 1 else dialog.accept()

    page.on("dialog", answer)
    page.click("#dl-discard-selected")  # dismissed: nothing happens
    assert page.inner_text("#result-line") == ""
    assert any(letter["message_id"] == message_id for letter in stack.http.get("/dead-letters").json()["messages"])
    page.click("#dl-discard-selected")  # confirmed
    wait_for(lambda: page.inner_text("#result-line").startswith("Discarded 1 of 1 selected"), timeout=30,
             what=lambda: f"the page to say it discarded it (it says {page.inner_text('#result-line')!r})")
    assert len(asked) == 2 and "for good" in asked[0]
    listed = stack.http.get("/dead-letters", params={"limit": 1000}).json()["messages"]
    assert message_id not in {letter["message_id"] for letter in listed}
    assert not any(mid == message_id for mid, _ in rows_by_key(stack.csv_path)), "never written"


def test_looking_up_a_countdown_shows_its_progress_live_until_it_succeeds(stack, page):
    task = stack.http.post("/tasks", json={"seconds": 4}, timeout=10)
    assert task.status_code == 202, task.text
    message_id = task.json()["message_id"]
    page.click("nav#views a[href='#lookup']")
    page.fill("#lookup-id", message_id)
    page.click("#lookup-form button")
    left = []

    def seconds_left() -> int | None:
        value = page.get_attribute("#lookup-record dd[data-field='progress']", "data-seconds-left")
        if value is not None and (not left or left[-1] != int(value)):
            left.append(int(value))
        return page.get_attribute("#lookup-record", "data-state") == "succeeded"

    wait_for(seconds_left, timeout=60, interval=0.2, what=lambda: f"the countdown to finish on the page ({left})")
    assert len(left) >= 2 and left == sorted(left, reverse=True), f"the page followed the countdown: {left}"
    screenshot(page, "lookup")

    detection = post(stack, random_payload(random.Random(77), frame_bytes=64))
    page.goto(f"{stack.base_url}/#lookup/{detection}")
    wait_for(lambda: page.is_visible("#lookup-record")
             and page.inner_text("#lookup-record dd[data-field='message']") == detection
             and page.get_attribute("#lookup-record", "data-state") == "succeeded", timeout=30,
             what="the detection to show as succeeded")
    assert '"rows_written"' in page.inner_text("#lookup-record dd[data-field='result']")


def test_a_training_started_from_the_models_view_is_listed_with_its_metrics(stack, page):
    before = len(stack.http.get("/models").json()["models"])
    page.click("nav#views a[href='#models']")
    page.fill("#train-params", '{"C": 0.5}')
    page.click("#train-form button")
    page.wait_for_selector("#train-message", timeout=10_000)
    message_id = page.inner_text("#train-message")
    page.wait_for_selector(f"#models-table tr[data-model-id='{message_id}']", timeout=90_000)
    models = stack.http.get("/models").json()["models"]
    assert len(models) == before + 1
    (model,) = [m for m in models if m["model_id"] == message_id]
    assert f"{model['accuracy']:.3f}" in page.inner_text(f"#models-table tr[data-model-id='{message_id}']")
    screenshot(page, "models")

    page.fill("#train-params", '{"C": -1}')
    page.click("#train-form button")
    wait_for(lambda: "params" in page.inner_text("#train-result"), timeout=10,
             what="the API's 422 naming the field, on the page")


def test_a_read_key_sees_the_models_but_the_admin_views_say_which_scope_they_need(stack):
    reader = stack.add_key("console-reader", "read")
    wait_for(lambda: stack.http.get("/models", headers=stack.auth_headers(reader)).status_code == 200, timeout=10,
             what="the API to know the new key")
    with browser.chromium_page() as page:
        page.goto(stack.base_url + "/#models", wait_until="load")
        wait_for(lambda: _log_in_when_asked(page, reader), timeout=15, what="the key prompt")
        page.wait_for_selector("#models-table tbody tr", timeout=15_000)
        assert page.is_hidden("#view-models .refused")
        page.click("nav#views a[href='#dead-letters']")
        wait_for(lambda: "lacks the scope 'admin'" in page.inner_text("#view-dead-letters .refused"), timeout=15,
                 what="the dead-letter view to name the scope it needs")
        assert page.locator("#dl-table tbody tr").count() == 0


def _log_in_when_asked(page, key: str) -> bool:
    if page.is_visible("#login"):
        page.fill("#api-key", key)
        page.click("#login button")
        return True
    return False


def test_an_upload_job_looked_up_shows_its_counts_and_then_the_uploads_answer(stack, page):
    import orjson

    rng = random.Random(8)
    data = b"".join(orjson.dumps(random_payload(rng, frame_bytes=16)) + b"\n" for _ in range(50))
    answer = stack.http.post("/file/upload", files={"file": ("cams.ndjson", data)},
                             headers={"Prefer": "respond-async"}, timeout=60)
    assert answer.status_code == 202, answer.text
    page.goto(f"{stack.base_url}/#lookup/{answer.json()['job_id']}")
    wait_for(lambda: page.is_visible("#lookup-record")
             and page.get_attribute("#lookup-record", "data-state") == "succeeded", timeout=30,
             what="the upload job to show as succeeded")
    assert '"enqueued": 50' in page.inner_text("#lookup-record dd[data-field='progress']")
    assert '"filename": "cams.ndjson"' in page.inner_text("#lookup-record dd[data-field='result']")
