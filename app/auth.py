"""Who is asking, and may they: bearer API keys, scopes and per-key rate limits, for every route.

Each route states its scope with `Security(authorize, scopes=[...])` (the
`ingest`, `read`, `tasks`, `metrics` or `admin` of app.keys.SCOPES); FastAPI
puts that requirement and the bearer scheme into the OpenAPI schema, so
`/docs` has an Authorize button that works. The answer is a `Principal`: the
key's name, tenant, scopes and client ids, which app.tenancy uses to decide
what the request may touch. The fast path of POST /api (app.fast_ingest)
calls `check` directly: the same decision without FastAPI.

Without a keys file (API_KEYS_FILE) the API is open: every request is the
OPEN principal, with every scope. That is only allowed on a loopback address
(`serving_problem`, checked by entrypoint_api.sh), or behind an
authenticating proxy of the operator's own (AUTH_BY_PROXY).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from fastapi import Depends, HTTPException, Request, Response, Security
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer, SecurityScopes

from app.keys import ApiKey, KeyRing
from app.rate_limits import RateLimiter
from config import Settings, get_settings
from logs import API_KEY, TENANT

#: `Authorization: Bearer <key>` in the schema; our own 401 (FastAPI's says 403 with no header).
bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    bearerFormat="ik_<id>_<secret>",
    description="An API key from `python -m app.keys add NAME --scopes ...`. Each route names the scope it needs.",
)


@dataclass(frozen=True)
class Principal:
    """The key a request was made with (or OPEN, when the API has no keys)."""

    key: str
    key_id: str
    tenant: str
    scopes: frozenset[str]
    #: The `client_id`s its payloads may carry; empty: any.
    client_ids: frozenset[str] = frozenset()
    rate: int = 0

    @property
    def admin(self) -> bool:
        return "admin" in self.scopes

    def has(self, scope: str) -> bool:
        return self.admin or scope in self.scopes

    @classmethod
    def of(cls, key: ApiKey, default_rate: int) -> "Principal":
        return cls(key.name, key.id, key.tenant, frozenset(key.scopes), frozenset(key.client_ids),
                   default_rate if key.rate is None else key.rate)


#: Principals an Authenticator keeps built.
MAX_PRINCIPALS = 1024

OPEN = Principal(key="", key_id="", tenant="", scopes=frozenset({"admin"}))


class Unauthorized(HTTPException):
    def __init__(self, detail: str):
        super().__init__(401, detail, headers={"WWW-Authenticate": 'Bearer realm="ingest"'})


class Authenticator:
    """One per process: the key ring and the rate limiter."""

    def __init__(self, settings: Settings):
        from actors.stats import namespace_for  # here: `python -m app.auth check` needs no broker

        self.ring = KeyRing(settings.api_keys_file)
        self.limiter = RateLimiter(settings.redis_url, namespace_for(settings.rabbitmq_url), settings.api_workers)
        self.default_rate = settings.default_rate_per_key
        self.by_proxy = settings.auth_by_proxy
        self.allowed_hosts = frozenset(settings.allowed_hosts.split())
        #: Each key's Principal (a key is immutable: a changed entry is another key).
        self._principals: dict[ApiKey, Principal] = {}

    def principal_for(self, authorization: str | None, server: tuple | None = None,
                      cross_site: bool = False) -> Principal:
        """The request's principal from its Authorization header; raises Unauthorized (401).

        `server` is the ASGI scope's: the address the request came in on. Without keys, a request
        that reached a non-loopback address is refused (503), whatever API_HOST says: the guard
        of entrypoint_api.sh does not see a uvicorn started by hand. Without keys, a request a
        browser sent from another site's page (`cross_site`) is refused (403): any page the
        developer opens could otherwise post to their open local API. With keys that needs no
        rule: a page cannot attach a key it does not have.
        """
        if self.by_proxy or not self.ring.enforcing:
            self.ring.refresh()  # a keys file created while running takes effect within seconds
            if self.by_proxy:
                return OPEN
            if not self.ring.enforcing:
                if not _local_address(server):
                    raise HTTPException(503, NO_KEYS_OFF_LOOPBACK, headers={"Retry-After": "5"})
                if cross_site:
                    raise HTTPException(403, "this API has no keys, so it refuses requests from other sites' pages; "
                                        "create a key with `python -m app.keys add NAME --scopes ...`")
                return OPEN
        if not authorization:
            raise Unauthorized("send an API key as 'Authorization: Bearer <key>' (create one with "
                               "`python -m app.keys add NAME --scopes ...`)")
        scheme, _, secret = authorization.partition(" ")
        if scheme.lower() != "bearer" or not secret:
            raise Unauthorized("the Authorization header must be 'Bearer <key>'")
        key = self.ring.find(secret.strip())
        if key is None:
            raise Unauthorized("unknown or revoked API key")
        principal = self._principals.get(key)
        if principal is None:  # built once per key: its frozensets were ~3% of the API's time a request
            if len(self._principals) >= MAX_PRINCIPALS:
                self._principals.clear()
            principal = self._principals[key] = Principal.of(key, self.default_rate)
        return principal

    async def admit(self, principal: Principal) -> None:
        """429 with Retry-After when the key is over its rate."""
        wait = await self.limiter.admit(principal.key_id, principal.rate)
        if wait is not None:
            raise HTTPException(
                429,
                f"key {principal.key!r} is over its rate of {principal.rate} requests per second; retry after "
                "Retry-After seconds",
                headers={"Retry-After": self.limiter.retry_after(wait)},
            )


@lru_cache
def get_authenticator() -> Authenticator:
    return Authenticator(get_settings())


def forbidden(principal: Principal, scope: str) -> HTTPException:
    return HTTPException(403, f"key {principal.key!r} lacks the scope {scope!r} this route needs "
                              f"(it has: {', '.join(sorted(principal.scopes))})")


def is_cross_site(headers: list[tuple[bytes, bytes]], allowed_hosts: frozenset[str]) -> bool:
    """Whether a browser says it sent this from another site's page (Fetch Metadata, else Origin)."""
    for name, value in headers:
        if name == b"sec-fetch-site":
            return value not in (b"same-origin", b"none")
        if name == b"origin":
            host = value.split(b"//", 1)[-1].rsplit(b":", 1)[0].strip(b"[]").decode("latin-1")
            return value != b"null" and host not in allowed_hosts and "*" not in allowed_hosts
    return False


async def check(authorization: str | None, scopes: list[str], server: tuple | None = None,
                headers: list[tuple[bytes, bytes]] = ()) -> Principal:
    """401, 403 or 429 (raised), else who is asking: the one decision, for the routes and the fast path.

    `headers` (the ASGI scope's) only matter while the API has no keys: see `principal_for`."""
    authenticator = get_authenticator()
    cross_site = not authenticator.ring.enforcing and is_cross_site(headers, authenticator.allowed_hosts)
    principal = authenticator.principal_for(authorization, server, cross_site)
    API_KEY.set(principal.key or None)  # the request's log lines (its access line too) name the key
    TENANT.set(principal.tenant or None)
    for scope in scopes:
        if not principal.has(scope):
            raise forbidden(principal, scope)
    await authenticator.admit(principal)
    return principal


#: Where a checked principal waits in the request scope for `authorize`.
CHECKED = "auth.principal"


async def _checked(request: Request, scopes: list[str]) -> Principal:
    """The principal checked earlier for this request (by the route class, or the fast path before
    it handed over), if it has the scopes: checked, and counted against its rate, once; else `check`."""
    principal = request.scope.get(CHECKED)
    if principal is None or not all(principal.has(scope) for scope in scopes):
        principal = await check(request.headers.get("authorization"), scopes, request.scope.get("server"),
                                request.scope["headers"])
        request.scope[CHECKED] = principal
    return principal


async def authorize(
    security_scopes: SecurityScopes,
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
) -> Principal:
    """The dependency every guarded route declares, through `requires(scope)`."""
    return await _checked(request, security_scopes.scopes)


def requires(scope: str):
    """`principal: Principal = requires("ingest")`, or `dependencies=[requires("admin")]`."""
    return Security(authorize, scopes=[scope])


def _required_scopes(dependant: Dependant) -> list[str] | None:
    """The scopes a route's `authorize` dependencies ask for; None when it has none (open routes)."""
    scopes: list[str] | None = None
    pending = [dependant]
    while pending:
        current = pending.pop()
        if current.call is authorize:
            scopes = (scopes or []) + [s for s in current.own_oauth_scopes or [] if s not in (scopes or [])]
        pending.extend(current.dependencies)
    return scopes


NO_KEYS_OFF_LOOPBACK = ("this API has no keys (API_KEYS_FILE does not exist), so it answers loopback only; "
                        "create one with `python -m app.keys add NAME --scopes ...`")
_NO_KEYS_WHY = ("The API process has API_MAX_CONCURRENT_REQUESTS requests in flight, or it has no keys file and "
                "this is not a loopback address (create a key; it counts within a second).")
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.", "required": True,
                                "schema": {"type": "integer"}, "example": 1}}


def _error_doc(description: str, detail: str, headers: dict | None = None) -> dict:
    return {
        "description": description,
        **({"headers": headers} if headers else {}),
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"},
                                          "example": {"detail": detail}}},
    }


def auth_responses(scopes: list[str]) -> dict[int, dict]:
    """What every guarded route may answer before its own work: 401, 403, 429, and 503 (no keys, not loopback)."""
    scope = scopes[0] if scopes else "admin"
    return {
        401: _error_doc(
            "No API key, or an unknown or revoked one.", "unknown or revoked API key",
            {"WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}},
        ),
        403: _error_doc(
            f"The key lacks the `{scope}` scope (or, for ingest, may not send for the payload's `client_id`).",
            f"key 'acme-reader' lacks the scope '{scope}' this route needs (it has: read)",
        ),
        429: _error_doc(
            "The key is over its requests per second (its --rate, or DEFAULT_RATE_PER_KEY).",
            "key 'acme-cameras' is over its rate of 50 requests per second; retry after Retry-After seconds",
            _RETRY_AFTER,
        ),
        503: _error_doc(_NO_KEYS_WHY, NO_KEYS_OFF_LOOPBACK, _RETRY_AFTER),
    }


class AuthorizedRoute(APIRoute):
    """A route that authenticates before FastAPI reads its body.

    FastAPI reads and parses a request's body (an upload's whole multipart
    form, spooled to disk) before it runs the route's dependencies: without
    this, a client with no key could make the API read a gigabyte, or learn
    from a 422 or 415 before hearing 401. The principal is kept in the request
    scope, so `authorize` does not check (nor count against the rate) twice.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        scopes = _required_scopes(self.dependant)
        for status, documented in (auth_responses(scopes) if scopes is not None else {}).items():
            own = self.responses.setdefault(status, documented)
            if own is not documented and status == 503:  # the route's own 503 (RabbitMQ, Redis), and this one
                also = f"Or: {_NO_KEYS_WHY[0].lower()}{_NO_KEYS_WHY[1:]}"
                self.responses[status] = {**own, "description": f"{own.get('description', '')} {also}"}

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()
        scopes = _required_scopes(self.dependant)
        if scopes is None:
            return handler

        async def authenticated(request: Request) -> Response:
            await _checked(request, scopes)
            return await handler(request)

        return authenticated


def _loopback_ip(text: str) -> bool | None:
    """Whether `text` is a loopback IP address; None when it is no IP address at all."""
    try:
        return ipaddress.ip_address(text.strip("[]")).is_loopback
    except ValueError:
        return None


def _local_address(server: tuple | None) -> bool:
    """A loopback IP, a Unix socket (None), or a name only an in-process test client gives
    (uvicorn always reports an IP; "testserver" is Starlette's TestClient)."""
    return server is None or _loopback_ip(str(server[0])) is not False


def is_loopback(host: str) -> bool:
    return host == "localhost" or _loopback_ip(host) is True


def serving_problem(settings: Settings) -> str | None:
    """Why the API must not start with these settings (keys-less on a network address), or None."""
    if settings.auth_by_proxy or is_loopback(settings.api_host):
        return None
    ring = KeyRing(settings.api_keys_file)
    if ring.enforcing:
        return None
    return (f"refusing to serve on {settings.api_host} without API keys: API_KEYS_FILE "
            f"({settings.api_keys_file}) does not exist; create the first key with "
            "`python -m app.keys add admin --scopes admin` (or set AUTH_BY_PROXY=true if your own "
            "authenticating proxy is the only way in)")


if __name__ == "__main__":
    import sys

    from loguru import logger

    # `python -m app.auth check`: entrypoint_api.sh's guard, one line and a non-zero exit.
    if sys.argv[1:] != ["check"]:
        sys.exit("usage: python -m app.auth check")
    settings = get_settings()
    logger.remove()
    problem = serving_problem(settings)
    if problem:
        print(problem, file=sys.stderr)
        sys.exit(1)
