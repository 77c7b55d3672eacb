"""What one tenant may touch: the client ids it sends for, the ids it gets, the statuses it reads.

A tenant is a key's `tenant` (by default its name); keys of one tenant share
everything here. Ids derived from an Idempotency-Key or a file are named in a
scope of the deployment (the RabbitMQ vhost, as for every Redis record) and
the tenant: the same key from two tenants makes two messages, never a false
"duplicate" (and app.idempotency keeps its Redis records per deployment too,
so two deployments sharing a Redis never answer each other). Without keys
(the OPEN principal) ids are named as before tenants existed, so a retry or
a re-upload across the upgrade still lands on the ids already written. An uploaded file's own
`message_id` column is kept only for `admin` keys (restoring a CSV the service
wrote is an operator's job); a tenant's file ids are mapped into its scope,
so a file can never pre-empt another tenant's message id.
"""

from __future__ import annotations

from functools import lru_cache

from fastapi import HTTPException

from app.auth import Principal
from config import get_settings


@lru_cache
def _deployment() -> str:
    from actors.stats import namespace_for

    return namespace_for(get_settings().rabbitmq_url)


def id_scope(principal: Principal) -> str:
    """The prefix of every name ids and Idempotency-Key records are derived from; "" for OPEN."""
    return scope_name(_deployment(), principal.tenant) if principal.key else ""


def in_scope(scope: str, name: str) -> str:
    return f"{scope} {name}" if scope else name


def scope_name(deployment: str, tenant: str) -> str:
    """Tenant names hold no spaces and the deployment comes first, so the fields of
    `<deployment> <tenant> <...>` can be told apart from the right: no two scopes make the same name."""
    return f"{deployment} {tenant}"


def scoped_key(principal: Principal, idempotency_key: str) -> str:
    """An Idempotency-Key in the principal's id scope."""
    return in_scope(id_scope(principal), idempotency_key)


def file_row_id(principal: Principal, message_id: str) -> str:
    """The id a `message_id` found in an uploaded file becomes for this principal."""
    return message_id if principal.admin else scoped_file_id(id_scope(principal), message_id)


def scoped_file_id(scope: str, message_id: str) -> str:
    """A file's `message_id` in the id scope of a tenant that is not admin."""
    from app.idempotency import message_id_for

    return message_id_for(in_scope(scope, f"file-id {message_id}"))


def client_problem(principal: Principal, client_id: object) -> dict | None:
    """The error (in the 422 item shape) when this key may not send for `client_id`, else None."""
    if not principal.client_ids or client_id in principal.client_ids:
        return None
    return {
        "field": "client_id",
        "message": f"key {principal.key!r} may not send for client_id {client_id!r} "
        f"(it may for: {', '.join(sorted(principal.client_ids))})",
        "type": "client_id_forbidden",
    }


def require_client(principal: Principal, client_id: object) -> None:
    problem = client_problem(principal, client_id)
    if problem is not None:
        raise HTTPException(403, detail=[problem])


def sees(principal: Principal, record: dict) -> bool:
    """Whether a message's status (or dead letter) recorded for `record["tenant"]` is this principal's."""
    return principal.admin or record.get("tenant", "") == principal.tenant


def message_options(principal: Principal) -> dict[str, str]:
    """What every message of this principal carries: the key's name (logs, dead letters) and tenant."""
    return {"key": principal.key, "tenant": principal.tenant} if principal.key else {}
