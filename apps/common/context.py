"""Who is acting and under which trace: the context that audit rows and log lines carry.

Services never see a request (STYLE.md); the API layer turns the request into an `Actor` and the
trace id lives in a context variable, set by the trace middleware or by a Celery task hook.
"""

from __future__ import annotations

import contextvars
import uuid
from dataclasses import dataclass
from enum import StrEnum
from uuid import UUID

_trace_id: contextvars.ContextVar[str] = contextvars.ContextVar("trace_id", default="")


def current_trace_id() -> str:
    """Return the trace id of the work in hand, minting one for work that has none yet."""
    trace_id = _trace_id.get()
    if not trace_id:
        trace_id = uuid.uuid4().hex
        _trace_id.set(trace_id)
    return trace_id


def set_trace_id(trace_id: str) -> contextvars.Token[str]:
    return _trace_id.set(trace_id)


def reset_trace_id(token: contextvars.Token[str]) -> None:
    _trace_id.reset(token)


class ActorKind(StrEnum):
    USER = "USER"
    API_KEY = "API_KEY"
    SYSTEM = "SYSTEM"


@dataclass(frozen=True, slots=True)
class Actor:
    """The principal behind a change, as the audit log records it."""

    kind: ActorKind
    label: str
    user_id: UUID | None = None
    api_key_id: UUID | None = None
    ip: str | None = None
    user_agent: str = ""

    @classmethod
    def system(cls, label: str = "system") -> Actor:
        return cls(kind=ActorKind.SYSTEM, label=label)
