"""Access control on the real stack: keys, scopes, tenants, rate limits and safe defaults, over real HTTP."""

from __future__ import annotations

import os
import random
import subprocess
import time
import uuid

import httpx
import orjson
import pytest

from app.auth import OPEN
from app.bulk_ingest import validate
from app.idempotency import message_id_for
from pipeline.rows import HEADER, encode_rows
from pipeline.shard_files import read_shard
from tests.support.csv_check import assert_rows_match, wait_for_rows
from tests.support.payloads import random_payload
from tests.support.stack import ROOT, Stack, free_port, isolated_stack
from tests.support.waiting import wait_for


@pytest.fixture(scope="module")
def tenants(tmp_path_factory):
    """A stack with two tenants: acme (cameras, a reader, a task runner) and globex (cameras)."""
    # DEBUG: the workers' per-message lines, which name the key, are DEBUG lines.
    with isolated_stack(tmp_path_factory.mktemp("access"), "access", processes=1, threads=4,
                        log_level="DEBUG") as stack:
        stack.keys = {
            "acme": stack.add_key("acme-cameras", "ingest,read", client_ids=("acme",), tenant="acme"),
            "acme-reader": stack.add_key("acme-reader", "read", tenant="acme"),
            "acme-tasks": stack.add_key("acme-tasks", "tasks,read", tenant="acme"),
            "globex": stack.add_key("globex-cameras", "ingest,read", client_ids=("globex",), tenant="globex"),
        }
        stack.start()
        yield stack


def as_key(stack: Stack, name: str) -> httpx.Client:
    return httpx.Client(base_url=stack.base_url, headers=stack.auth_headers(stack.keys[name]), timeout=30)


def payload(client_id: str, seed: int) -> dict:
    return random_payload(random.Random(seed), frame_bytes=64) | {"client_id": client_id}


def enqueued(body: dict) -> dict:
    """The payload as the API enqueues it (validated, created_at in ISO 8601)."""
    return validate(body, OPEN)[0]


def test_without_a_key_every_route_but_the_probes_answers_401(tenants):
    anonymous = httpx.Client(base_url=tenants.base_url, timeout=10)
    refused = anonymous.post("/api", json=payload("acme", 1))
    assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
    for path in ("/status", "/dead-letters", "/metrics", "/models", "/records", f"/api/{uuid.uuid4()}"):
        assert anonymous.get(path).status_code == 401, path
    assert anonymous.get("/health").status_code == 200
    assert anonymous.get("/ready").status_code == 200


def test_a_key_revoked_with_the_cli_while_the_api_runs_is_refused_within_seconds(tenants):
    secret = tenants.add_key("short-lived", "read")
    client = httpx.Client(base_url=tenants.base_url, headers=tenants.auth_headers(secret), timeout=10)
    wait_for(lambda: client.get("/models").status_code == 200, timeout=5, what="the API to accept the new key")
    subprocess.run([str(ROOT / ".venv/bin/python"), "-m", "app.keys", "revoke", "short-lived"], cwd=ROOT,
                   env={**os.environ, "API_KEYS_FILE": str(tenants.keys_file)}, check=True, capture_output=True)
    revoked_at = time.monotonic()
    wait_for(lambda: client.get("/models").status_code == 401, timeout=5, what="the revoked key to be refused")
    assert time.monotonic() - revoked_at < 5


def test_a_key_lacking_the_scope_gets_403_naming_it(tenants):
    reader = as_key(tenants, "acme-reader")
    response = reader.post("/api", json=payload("acme", 2))
    assert response.status_code == 403 and "'ingest'" in response.json()["detail"]
    assert reader.get("/dead-letters").status_code == 403
    assert as_key(tenants, "acme").post("/tasks", json={"seconds": 0}).status_code == 403


def test_a_foreign_client_id_is_refused_alone_in_a_single_post_a_batch_item_and_an_upload_row(tenants):
    acme = as_key(tenants, "acme")
    single = acme.post("/api", json=payload("globex", 3))
    assert single.status_code == 403 and single.json()["detail"][0]["field"] == "client_id"

    mine, theirs = payload("acme", 4), payload("globex", 5)
    batch = acme.post("/api/batch", content=orjson.dumps([mine, theirs]),
                      headers={"content-type": "application/json"}).json()
    assert [item["status"] for item in batch["items"]] == ["received", "rejected"]
    assert batch["items"][1]["errors"][0]["type"] == "client_id_forbidden"

    mine_too, theirs_too = payload("acme", 6), payload("globex", 7)
    ndjson = orjson.dumps(mine_too) + b"\n" + orjson.dumps(theirs_too) + b"\n"
    upload = acme.post("/file/upload", files={"file": ("rows.ndjson", ndjson)}).json()
    assert (upload["enqueued"], upload["rejected"]) == (1, 1)
    assert upload["rejections"][0]["errors"][0]["field"] == "client_id"

    accepted = {batch["items"][0]["message_id"]: enqueued(mine)}
    wait_for_rows(tenants.csv_path, accepted)
    assert_rows_match(tenants.csv_path, accepted)
    devices = {row["device_id"] for row in read_shard(tenants.csv_path)}
    assert theirs["device_id"] not in devices and theirs_too["device_id"] not in devices


def test_another_tenants_message_or_task_is_404_while_the_own_tenant_and_admin_see_it(tenants):
    message_id = as_key(tenants, "acme").post("/api", json=payload("acme", 8)).json()["message_id"]
    task_id = as_key(tenants, "acme-tasks").post("/tasks", json={"seconds": 0}).json()["message_id"]
    for path in (f"/api/{message_id}", f"/tasks/{task_id}"):
        wait_for(lambda: as_key(tenants, "acme-reader").get(path).status_code == 200, timeout=10,
                 what=f"acme's reader to see {path}")
        foreign = as_key(tenants, "globex").get(path)
        assert foreign.status_code == 404, path
        assert tenants.http.get(path).status_code == 200, "admin sees every tenant"


def test_the_same_idempotency_key_from_two_tenants_makes_two_messages_both_written(tenants):
    bodies = {"acme": payload("acme", 9), "globex": payload("globex", 10)}
    answers = {name: as_key(tenants, name).post("/api", json=body, headers={"Idempotency-Key": "order-1"})
               for name, body in bodies.items()}
    assert {answer.status_code for answer in answers.values()} == {202}
    ids = {name: answer.json()["message_id"] for name, answer in answers.items()}
    assert ids["acme"] != ids["globex"]
    accepted = {ids[name]: enqueued(body) for name, body in bodies.items()}
    wait_for_rows(tenants.csv_path, accepted)
    assert_rows_match(tenants.csv_path, accepted)


def test_an_upload_cannot_pre_empt_the_id_of_another_tenants_keyed_request(tenants):
    # The id globex's request with Idempotency-Key order-2 gets, computed as the API does.
    target = message_id_for(f"{tenants.id_scope('globex')} order-2")
    squatter = enqueued(payload("acme", 11))
    file = HEADER.encode() + encode_rows(target, squatter)[0]
    assert as_key(tenants, "acme").post("/file/upload", files={"file": ("rows.csv", file)}).json()["enqueued"] == 1

    genuine = payload("globex", 12)
    answer = as_key(tenants, "globex").post("/api", json=genuine, headers={"Idempotency-Key": "order-2"})
    assert answer.status_code == 202 and answer.json()["message_id"] == target
    wait_for_rows(tenants.csv_path, {target: enqueued(genuine)})
    assert {row["client_id"] for row in read_shard(tenants.csv_path) if row["message_id"] == target} == {"globex"}


def walk_records(client: httpx.Client, **params) -> list[dict]:
    """Every row GET /records answers with these filters, following `next` while `more`."""
    rows, cursor = [], None
    for _ in range(100):
        page = client.get("/records", params={**params, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        rows += page.json()["records"]
        cursor = page.json()["next"]
        if not page.json()["more"]:
            return rows
    raise AssertionError("GET /records kept saying more")


def test_records_answer_each_tenant_its_own_rows_a_page_at_a_time_and_an_admin_everyones(tenants):
    device = f"rec-{uuid.uuid4().hex[:8]}"
    sent = {"acme": [payload("acme", 20 + n) | {"device_id": device} for n in range(3)],
            "globex": [payload("globex", 30) | {"device_id": device}]}
    owner = {}
    accepted = {}
    for name, bodies in sent.items():
        for body in bodies:
            answer = as_key(tenants, name).post("/api", json=body)
            assert answer.status_code == 202
            owner[answer.json()["message_id"]] = name
            accepted[answer.json()["message_id"]] = enqueued(body)
    wait_for_rows(tenants.csv_path, accepted)
    written = [row for row in read_shard(tenants.csv_path) if row["device_id"] == device]

    def without_time(rows: list[dict]) -> list[dict]:
        assert all(row["written_at"].endswith("Z") for row in rows)
        return [{name: value for name, value in row.items() if name != "written_at"} for row in rows]

    # acme's reader (no client_id of its own) reads every acme row, in pages of 2 that split messages.
    acme = walk_records(as_key(tenants, "acme-reader"), device_id=device, limit=2)
    assert without_time(acme) == [row for row in written if owner[row["message_id"]] == "acme"]
    globex = walk_records(as_key(tenants, "globex"), device_id=device)
    assert without_time(globex) == [row for row in written if owner[row["message_id"]] == "globex"]
    assert without_time(walk_records(tenants.http, device_id=device)) == written  # admin: every tenant's
    assert walk_records(as_key(tenants, "globex"), client_id="acme") == []

    lean = as_key(tenants, "acme-reader").get("/records", params={"device_id": device, "frames": "false"}).json()
    assert lean["records"] and all("image_frame" not in row for row in lean["records"])
    too_many = tenants.http.get("/records", params={"limit": 100_000})
    assert too_many.status_code == 422 and too_many.json()["detail"][0]["field"] == "limit"
    bad_cursor = tenants.http.get("/records", params={"cursor": "../etc"})
    assert bad_cursor.status_code == 422 and bad_cursor.json()["detail"][0]["field"] == "cursor"


def test_worker_log_lines_name_the_key_that_sent_the_message(tenants):
    message_id = as_key(tenants, "acme").post("/api", json=payload("acme", 13)).json()["message_id"]
    wait_for(lambda: any(message_id in line and "key=acme-cameras" in line
                         for line in tenants.workers_log.read_text().splitlines()),
             timeout=30, what=f"a worker line for {message_id} naming key acme-cameras")


def test_a_path_with_an_encoded_newline_stays_one_access_log_line(tenants):
    marker = uuid.uuid4().hex
    httpx.get(f"{tenants.base_url}/health%0A2026-12-01 00:00:00.000 | INFO     | app | forged-{marker}", timeout=10)
    line = wait_for(lambda: next((line for line in tenants.api_log.read_text().splitlines() if marker in line), None),
                    timeout=10, what="the access line")
    assert "GET /health\\n2026" in line and line.index("GET /health") < line.index(marker)
    assert sum(marker in line for line in tenants.api_log.read_text().splitlines()) == 1


def test_two_api_processes_together_hold_a_key_to_its_rate_with_429_and_retry_after(tenants):
    secret = tenants.add_key("limited", "read", rate=5)
    port = free_port()
    second = subprocess.Popen([str(ROOT / "entrypoint_api.sh")], cwd=ROOT, env={**tenants.env, "API_PORT": str(port)},
                              stdout=open(tenants.workdir / "api-2.log", "ab"), stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        apis = [tenants.base_url, f"http://127.0.0.1:{port}"]
        wait_for(lambda: httpx.get(f"{apis[1]}/ready", timeout=2).status_code == 200, timeout=60,
                 what="the second API process")
        headers = tenants.auth_headers(secret)
        probe = f"/api/{uuid.uuid4()}"  # 404 once admitted: cheap, and writes nothing
        wait_for(lambda: all(httpx.get(f"{api}{probe}", headers=headers).status_code in (404, 429) for api in apis),
                 timeout=5, what="both APIs to know the key")
        probed_in = int(time.time())  # the probes above spent tokens of this window: start in the next
        wait_for(lambda: int(time.time()) > probed_in, timeout=2, interval=0.01, what="the next one-second window")
        answers, seconds = [], set()
        with httpx.Client(timeout=10) as client:
            for index in range(40):
                seconds.add(int(time.time()))
                answers.append(client.get(f"{apis[index % 2]}{probe}", headers=headers))
            seconds.add(int(time.time()))
        admitted = [a for a in answers if a.status_code == 404]
        refused = [a for a in answers if a.status_code == 429]
        assert len(admitted) + len(refused) == 40
        assert len(admitted) <= 5 * len(seconds), f"{len(admitted)} admitted in {len(seconds)} windows"
        assert refused and all(int(a.headers["retry-after"]) >= 1 for a in refused)
        assert {str(a.url.port) for a in refused} == {str(tenants.api_port), str(port)}, "both processes refuse"
    finally:
        second.terminate()
        second.wait(30)


def test_a_non_loopback_bind_without_keys_refuses_to_start_with_one_line(tmp_path):
    started = time.monotonic()
    result = subprocess.run(
        [str(ROOT / "entrypoint_api.sh")], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "API_HOST": "0.0.0.0", "API_PORT": str(free_port()),
             "API_KEYS_FILE": str(tmp_path / "missing.json"), "PYTHON": str(ROOT / ".venv/bin/python")},
    )
    assert result.returncode != 0
    [line] = result.stderr.strip().splitlines()
    assert "API_KEYS_FILE" in line and "python -m app.keys add" in line
    assert time.monotonic() - started < 30


def test_without_keys_on_loopback_the_api_serves_and_warns_that_it_is_open(tmp_path):
    with isolated_stack(tmp_path, "open", processes=1, threads=2, auth=False) as stack:
        stack.start()
        body = payload("acme", 14)
        answer = httpx.post(f"{stack.base_url}/api", json=body, timeout=10)
        assert answer.status_code == 202
        wait_for_rows(stack.csv_path, {answer.json()["message_id"]: enqueued(body)})
        assert "the API is open to anyone" in stack.api_log.read_text()
