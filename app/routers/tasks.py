"""POST /tasks: the countdown background task."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from actors.tasks import countdown
from app.json_route import OrjsonRoute
from app.errors import UNAVAILABLE_RESPONSE, VALIDATION_RESPONSE
from app.limits import require_json
from app.publishing import publish
from app.schemas import CountdownRequest, CountdownSubmitted

router = APIRouter(tags=["tasks"], route_class=OrjsonRoute)


@router.post(
    "/tasks",
    status_code=202,
    response_model=CountdownSubmitted,
    summary="Start a countdown in a worker; answers at once",
    dependencies=[Depends(require_json)],
    responses={**VALIDATION_RESPONSE, **UNAVAILABLE_RESPONSE},
)
async def submit_countdown(request: CountdownRequest) -> CountdownSubmitted:
    message_id = await publish(countdown, request.seconds)
    return CountdownSubmitted(message_id=message_id, seconds=request.seconds)
