"""Property-based fuzzing of the live API from its own OpenAPI schema (schemathesis).

No generated input may produce a 5xx or an answer that contradicts the schema,
and afterwards the CSV must hold exactly the rows of the payloads accepted.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.support.csv_check import assert_rows_match, count_rows
from tests.support.rabbit import create_vhost, delete_vhost, queue_state, vhost_url
from tests.support.stack import Stack
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

ACCEPTED: dict[str, dict] = {}


@pytest.fixture(scope="module")
def fuzz_stack(tmp_path_factory):
    vhost = create_vhost("fuzz")
    # Short countdowns: the fuzzer must not occupy worker threads for an hour.
    stack = Stack(tmp_path_factory.mktemp("fuzz"), vhost_url(vhost), max_countdown_seconds="2")
    try:
        yield stack.start()
    finally:
        stack.stop()
        delete_vhost(vhost)


@pytest.fixture(scope="module")
def api_schema(fuzz_stack):
    return schemathesis.openapi.from_url(f"{fuzz_stack.base_url}/openapi.json")


def _operations() -> list:
    """(label, generation mode) pairs; invalid inputs only where an operation takes any."""
    from app.main import app

    pairs = []
    for path, item in app.openapi()["paths"].items():
        for method, operation in item.items():
            label = f"{method.upper()} {path}"
            pairs.append(pytest.param(label, GenerationMode.POSITIVE, id=f"valid {label}"))
            if operation.get("parameters") or operation.get("requestBody"):
                pairs.append(pytest.param(label, GenerationMode.NEGATIVE, id=f"invalid {label}"))
    return pairs


#: Operations whose well-formed requests may still be refused (422, documented) by what exists
#: on the server, which a schema cannot say: a dataset file, a stored model, a parameter's range.
#: Any bytes are a valid file to the schema; the upload refuses what is not CSV, XLSX or NDJSON (415).
CHECKED_AGAINST_STATE = {"POST /tasks/train", "POST /tasks/predict", "POST /file/upload"}


# Driven through schemathesis' Hypothesis strategies: its pytest plugin (4.32.5) fails on pytest 9.
@pytest.mark.parametrize(("label", "mode"), _operations())
def test_no_generated_input_gets_a_server_error_or_breaks_the_schema(api_schema, fuzz_stack, label, mode):
    operation = api_schema.find_operation_by_label(label)

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case):
        # With the stack's admin key in place of the generated one: auth is on, as in production. A
        # negative case that left the required Authorization out on purpose is sent without it (and
        # must be refused); the refusals have their own tests, and schemathesis' ignored_auth check
        # replays requests without the key.
        dropped = mode is GenerationMode.NEGATIVE and "Authorization" not in (case.headers or {})
        headers = None if dropped else fuzz_stack.auth_headers(fuzz_stack.admin_key)
        response = case.call(headers=headers, timeout=10)
        excluded = [positive_data_acceptance] if label in CHECKED_AGAINST_STATE else []
        case.validate_response(response, excluded_checks=excluded, headers=headers)
        if mode is GenerationMode.NEGATIVE:
            assert response.status_code < 500
        if case.method == "POST" and case.path == "/api" and response.status_code == 202:
            ACCEPTED[response.json()["message_id"]] = case.body

    check()


def test_the_csv_holds_exactly_the_fuzzed_payloads_that_were_accepted(fuzz_stack):
    assert ACCEPTED, "the fuzzer should have produced some valid payloads"
    expected = sum(len(body["data"]["preds"]) for body in ACCEPTED.values())
    wait_for(lambda: count_rows(fuzz_stack.csv_path, set(ACCEPTED)) >= expected, timeout=120, interval=1,
             what=f"{expected} fuzzed rows")
    wait_for(lambda: queue_state(fuzz_stack.rabbitmq_url, "ingest")[0] == 0, timeout=60, what="an empty queue")
    assert_rows_match(fuzz_stack.csv_path, ACCEPTED)
