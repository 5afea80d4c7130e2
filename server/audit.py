"""The audit log: admin actions and refused requests, as JSON lines on logger `shoal.audit`.

One line per admin request once it is answered (`action`, `actor`, `outcome`, the names in
its path and whatever the service noted, e.g. the id of a key it created), one per refused
authentication (`auth_failed`: the reason, the client address and the key id when the token
had one) and one per request refused by scope (`denied`). A line never holds a secret: keys
appear by id, the Authorization header never.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

log = logging.getLogger("shoal.audit")

# Fields a service adds to the current admin request's audit line (see `note`).
_NOTES: ContextVar[dict[str, Any] | None] = ContextVar("audit_notes", default=None)


@contextmanager
def recording() -> Iterator[dict[str, Any]]:
    """Collect `note`s made while serving one request (threads it runs in included: they
    get a copy of the context, which shares this dict)."""
    notes: dict[str, Any] = {}
    token = _NOTES.set(notes)
    try:
        yield notes
    finally:
        _NOTES.reset(token)


def note(**fields: Any) -> None:
    """Add fields to the audit line of the request being served, if it is audited."""
    notes = _NOTES.get()
    if notes is not None:
        notes.update(fields)


def action(name: str, actor: str, outcome: str, **fields: Any) -> None:
    log.info("%s by %s: %s", name, actor, outcome, extra=_fields(name, actor, outcome, fields))


def denied(name: str, actor: str, outcome: str, **fields: Any) -> None:
    log.warning(
        "%s by %s denied: %s", name, actor, outcome, extra=_fields(name, actor, outcome, fields)
    )


def auth_failed(reason: str, client: str | None, key_id: str | None, route: str) -> None:
    fields = {"reason": reason, "client": client, "key_id": key_id, "path": route}
    log.warning(
        "authentication failed: %s",
        reason,
        extra=_fields("auth_failed", None, "unauthorized", fields),
    )


def _fields(name: str, actor: str | None, outcome: str, extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "audit": name,
        "actor": actor,
        "outcome": outcome,
        **{k: v for k, v in extra.items() if v is not None},
    }
