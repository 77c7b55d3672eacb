"""Load for POST /api: random valid payloads, 1-10 preds with ~8 KB base64 frames, as the demos send.

Headless, against a service started with ./run.sh (or docker compose up):

    .venv/bin/locust -f locustfile.py --headless --host http://127.0.0.1:8000 \
        -u 64 -r 16 --run-time 60s --stop-timeout 10s --only-summary \
        --csv data/locust/run --json-file data/locust/run

--stop-timeout lets each user finish the request it is in, so locust counts every request the
service may have accepted. data/locust/run.json holds the final totals; the run_*.csv files are
written once a second and can lag the end of the run by up to a second.

Environment:
    LOCUST_SEED  seed of the frames and payloads (default 20230213), for repeatable runs.
    LOCUST_WAIT  longest pause in seconds between a user's requests (default 0: none, so the
                 user count alone sets the load).
    API_KEY      the API key to send (one with the `ingest` scope); unset for an API without keys.
"""

from __future__ import annotations

import itertools
import os
import random

import orjson
from locust import between, task
from locust.contrib.fasthttp import FastHttpUser

from tests.support.payloads import random_frame, random_payload

SEED = int(os.environ.get("LOCUST_SEED", "20230213"))
MAX_WAIT = float(os.environ.get("LOCUST_WAIT", "0"))
API_KEY = os.environ.get("API_KEY", "")
HEADERS = {"content-type": "application/json", **({"Authorization": f"Bearer {API_KEY}"} if API_KEY else {})}

# Encoded once: a load client on the same 2 cores as the service would otherwise measure itself.
_frames_rng = random.Random(SEED)
FRAMES = [random_frame(_frames_rng) for _ in range(64)]

_user_numbers = itertools.count()


class IngestUser(FastHttpUser):
    """One device posting predictions back to back; geventhttpclient is locust's cheapest client."""

    wait_time = between(0, MAX_WAIT)

    def on_start(self) -> None:
        # Per user, not shared: greenlet scheduling would make one shared stream unrepeatable.
        self.rng = random.Random(f"{SEED}-{next(_user_numbers)}")

    @task
    def post_api(self) -> None:
        body = orjson.dumps(random_payload(self.rng, frames=FRAMES))
        with self.client.post("/api", data=body, headers=HEADERS, catch_response=True) as response:
            try:
                message_id = orjson.loads(response.content).get("message_id")
            except (orjson.JSONDecodeError, TypeError, AttributeError):
                message_id = None
            if response.status_code == 202 and message_id:
                response.success()
            else:
                detail = getattr(response, "error", None) or (response.text or "")[:200]
                response.failure(f"{response.status_code}: {detail}")
