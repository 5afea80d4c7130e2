"""Authentication (middleware) and authorization (a dependency of every API router).

    Observability -> EncodedSlashes -> Authentication -> BodyLimit -> routing
        -> authorize (scope table, quotas) -> handler -> audit line (admin routes)

`Authentication` runs before the body is read: a request without a valid key costs a header
parse and a hash, whatever it uploads. It stores the Principal in the ASGI scope. After
routing, `authorize` looks the route up in the scope table (api/access.py), checks the
principal against the path's collection and tenant, then charges the rate buckets and checks
the upsert batch quota; so a refused request does no work and changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from api.access import Rule, rule_for
from api.errors import shoal_error_response
from api.middleware import restore_slashes
from server import audit
from server.auth import METRICS, MISSING_KEY, Access, Authenticator, Principal, authorize
from server.database import Database
from server.errors import Forbidden, NotFound, ShoalError, Unauthorized

PRINCIPAL = "shoal.principal"  # the ASGI scope key Authentication sets
# Declares bearer auth in the OpenAPI schema (the docs page's "Authorize" button); the header
# itself was checked by Authentication already.
_BEARER = HTTPBearer(auto_error=False, description="The admin key or a tenant key.")
BearerDoc = Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)]
_KEY_ID = re.compile(r"shoal_([0-9a-f]{16})_")


class Authentication:
    def __init__(self, app: ASGIApp, authenticator: Authenticator, public_paths: Iterable[str]):
        self.app = app
        self.authenticator = authenticator
        self.public_paths = frozenset(public_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.public_paths:
            await self.app(scope, receive, send)
            return
        header = next(
            (
                value.decode("latin-1")
                for name, value in scope["headers"]
                if name == b"authorization"
            ),
            None,
        )
        try:
            principal = self.authenticator.authenticate(header)
        except ShoalError as exc:
            if isinstance(exc, Unauthorized):
                client = scope.get("client")
                key_id = _KEY_ID.search(header or "")
                audit.auth_failed(
                    exc.message,
                    client[0] if client else None,
                    key_id.group(1) if key_id else None,
                    scope["path"],
                )
            await shoal_error_response(exc)(scope, receive, send)
            return
        scope[PRINCIPAL] = principal
        await self.app(scope, receive, send)


async def current_principal(request: Request) -> Principal:
    return request.scope[PRINCIPAL]  # set by authorize_request, which runs before handlers


PrincipalDep = Annotated[Principal, Depends(current_principal)]


async def authorize_request(request: Request, _: BearerDoc) -> AsyncIterator[Principal]:
    """The scope check, quotas and audit line of one request (a dependency of every router)."""
    route = request.scope["route"]
    rule = rule_for(request.method, route.path)
    params = request.path_params
    collection = _name(params.get("collection"))
    tenant = _name(params.get("tenant"))
    principal = admit(
        request.app.state.database,
        request.scope,
        rule,
        route.name,
        collection,
        tenant,
        _parsed_body(request),
    )
    if rule.access is not Access.ADMIN:
        yield principal
        return
    with audit.recording() as notes:
        notes.update({"collection": collection, "tenant": tenant, **_other_params(params)})
        outcome = "ok"
        try:
            yield principal
        except ShoalError as exc:
            outcome = exc.code
            raise
        except Exception:
            outcome = "error"
            raise
        finally:
            audit.action(route.name, principal.actor, outcome, **notes)


def admit(
    database: Database,
    scope: Scope,
    rule: Rule,
    route_name: str,
    collection: str | None,
    tenant: str | None,
    body: Any,
) -> Principal:
    """Check the key in `scope` against the route's rule and the path's collection and tenant,
    then charge the rate buckets and check the batch quota (`body`: the parsed JSON). Shared
    by `authorize_request` and the lean lane (api/lean.py), which must refuse alike."""
    principal = scope.get(PRINCIPAL)
    if principal is None:
        # Let through by Authentication without a key: only /metrics when it is public.
        if rule.access is not Access.METRICS:
            raise Unauthorized(MISSING_KEY)
        principal = scope[PRINCIPAL] = METRICS
    try:
        authorize(principal, rule.access, collection, tenant)
    except (Forbidden, NotFound) as exc:
        audit.denied(route_name, principal.actor, exc.code, collection=collection, tenant=tenant)
        raise
    if collection is not None and (rule.rate is not None or rule.batch_points is not None):
        database.collection(collection)  # an unknown collection is a 404, not a 429
        if rule.batch_points is not None and tenant is not None:
            database.quotas.check_batch(collection, tenant, rule.batch_points(body))
        if rule.rate is not None:
            database.quotas.admit(collection, tenant, rule.rate, rule.cost(body))
    return principal


def _name(value: Any) -> str | None:
    return restore_slashes(value) if isinstance(value, str) else None


def _other_params(params: dict[str, Any]) -> dict[str, str]:
    return {k: restore_slashes(v) for k, v in params.items() if k not in ("collection", "tenant")}


def _parsed_body(request: Request) -> Any:
    """The JSON body FastAPI already parsed for this request (api/deps.py caches it)."""
    return getattr(request, "_json", None)
