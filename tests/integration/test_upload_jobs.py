"""Every upload is a job: its id at once with Prefer: respond-async, its progress while it runs,
its answer kept by id; a failed one says why."""

from __future__ import annotations

import random
import time

import orjson

from tests.support.payloads import random_payload
from tests.support.waiting import wait_for


def ndjson(seed: int, count: int) -> bytes:
    rng = random.Random(seed)
    return b"".join(orjson.dumps(random_payload(rng, frame_bytes=16)) + b"\n" for _ in range(count))


def upload(stack, name: str, data: bytes, **headers):
    return stack.http.post("/file/upload", files={"file": (name, data)}, headers=headers, timeout=120)


def job(stack, job_id: str) -> dict:
    answer = stack.http.get(f"/tasks/{job_id}", timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_an_upload_answers_with_its_job_whose_record_keeps_the_answer(stack):
    answer = upload(stack, "small.ndjson", ndjson(1, 20))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    record = wait_for(lambda: (found := job(stack, body["job_id"]))["state"] == "succeeded" and found, timeout=10,
                      what="the job's record to say succeeded")
    assert record["queue"] == "uploads" and record["result"] == body
    assert record["progress"] == {"filename": "small.ndjson", "rows_read": 20, "payloads": 20, "enqueued": 20,
                                  "rejected": 0}


def test_with_prefer_respond_async_the_job_id_comes_at_once_and_its_progress_is_seen_while_it_runs(stack):
    count = 10_000
    started = time.monotonic()
    answer = upload(stack, "large.ndjson", ndjson(2, count), Prefer="respond-async")
    assert answer.status_code == 202, answer.text
    assert answer.headers["Preference-Applied"] == "respond-async"
    submitted = answer.json()
    assert answer.headers["Location"] == submitted["status_url"] == f"/tasks/{submitted['job_id']}"
    seen = [job(stack, submitted["job_id"])]  # at once: never a 404
    assert seen[0]["state"] in ("running", "succeeded")

    def finished() -> bool:
        seen.append(job(stack, submitted["job_id"]))
        return seen[-1]["state"] == "succeeded"

    wait_for(finished, timeout=120, interval=0.01, what=lambda: f"the job to finish (last: {seen[-1]})")
    partial = [record["progress"]["enqueued"] for record in seen if record["state"] == "running"]
    assert any(0 < enqueued < count for enqueued in partial), f"progress while it ran: {sorted(set(partial))}"
    assert partial == sorted(partial), "progress only goes forward"
    result = seen[-1]["result"]
    assert (result["enqueued"], result["rejected"], result["complete"]) == (count, 0, True)
    assert time.monotonic() - started < 120


def test_a_background_job_that_cannot_read_its_file_is_failed_with_the_reason(stack):
    answer = upload(stack, "bad.csv", b"device_id,client_id\ncam,acme\n", Prefer="respond-async")
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["job_id"]
    record = wait_for(lambda: (found := job(stack, job_id))["state"] == "failed" and found, timeout=30,
                      what="the job to fail")
    assert record["last_error"].startswith("422: file: line 1 must be the header")
