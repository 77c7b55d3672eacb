"""POST /tasks: the countdown background task."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from actors.tasks import countdown
from app.auth import Principal, requires
from app.json_route import OrjsonRoute
from app.errors import JSON_BODY_RESPONSES, UNAVAILABLE_RESPONSE, validation_response
from app.limits import require_json
from app.links import TASK_STATUS
from app.publishing import publish
from app.schemas import CountdownRequest, CountdownSubmitted

router = APIRouter(tags=["tasks"], route_class=OrjsonRoute)


@router.post(
    "/tasks",
    status_code=202,
    response_model=CountdownSubmitted,
    summary="Start a countdown in a worker; answers at once",
    description="A worker on the `tasks` queue counts down `seconds`, so long tasks never delay detections.",
    response_description="Enqueued; RabbitMQ has confirmed the message.",
    dependencies=[Depends(require_json)],
    responses={
        202: {"links": TASK_STATUS},
        **validation_response("seconds", "Input should be greater than or equal to 0", "greater_than_equal"),
        **JSON_BODY_RESPONSES,
        **UNAVAILABLE_RESPONSE,
    },
)
async def submit_countdown(request: CountdownRequest, principal: Principal = requires("tasks")) -> CountdownSubmitted:
    message_id = await publish(countdown, request.seconds, sender=principal)
    return CountdownSubmitted(message_id=message_id, seconds=request.seconds)
