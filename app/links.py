"""OpenAPI links: which answer feeds which next call.

A link says "take this value from this answer and pass it there": the
`message_id` of an accepted detection to its status, a training's model id
to a prediction. Clients generated from the schema and readers of /docs see
how the calls chain; a stateful fuzzer (the fuzz test's schemathesis) follows
the links with real ids instead of random ones that could only be 404s.

Targets are named by operationId, which the app sets to the route function's
name (`create_app`), so a link survives a path change. tests/unit/test_openapi.py
checks that every target and parameter exists and that every expression finds
a value in the source answer's own example.
"""

from __future__ import annotations

from typing import Any


def _link(operation_id: str, description: str, *, parameters: dict[str, str] | None = None,
          request_body: Any = None) -> dict[str, Any]:
    link: dict[str, Any] = {"operationId": operation_id, "description": description}
    if parameters:
        link["parameters"] = parameters
    if request_body is not None:
        link["requestBody"] = request_body
    return link


def status_of(operation_id: str, pointer: str = "/message_id") -> dict[str, Any]:
    """The link from an answer naming a message to that message's status route."""
    return {"status": _link(operation_id, "Where this message is (`queued` from the moment of this answer).",
                            parameters={"message_id": f"$response.body#{pointer}"})}


DETECTION_STATUS = status_of("detection_status")
FIRST_ITEM_STATUS = status_of("detection_status", "/items/0/message_id")
TASK_STATUS = status_of("task_status")
PREDICT_WITH_RESULT = {
    "predict": _link(
        "submit_prediction",
        "Once a training has succeeded, predict with the model it stored (`inputs`: the model's features, "
        "see GET /models).",
        request_body={"model_id": "$response.body#/result/model_id"},
    )
}
PREDICT_WITH_LISTED = {
    "predict": _link("submit_prediction", "Predict with the first model listed.",
                     request_body={"model_id": "$response.body#/models/0/model_id"}),
}
REPLAY_QUEUE = {
    "replay": _link("replay_dead_letters", "Send this queue's dead letters back, once their cause is fixed.",
                    request_body={"queue": "$response.body#/queue"}),
}
