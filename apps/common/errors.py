"""Domain errors carrying the API's error codes.

Services raise these; one handler in `oms.api` renders the error envelope of API.md. The module
imports nothing from Django so pure domain modules can raise them too.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """A refusal the client can act on; `code` and `status` are fixed by API.md."""

    status: int = 400
    code: str = "MALFORMED_REQUEST"
    default_hint: str | None = None

    def __init__(
        self,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        hint: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}
        self.hint = hint if hint is not None else self.default_hint
        self.headers = headers or {}


class MalformedRequest(DomainError):
    status, code = 400, "MALFORMED_REQUEST"


class AuthenticationFailed(DomainError):
    status, code = 401, "AUTHENTICATION_FAILED"


class PermissionDenied(DomainError):
    status, code = 403, "PERMISSION_DENIED"


class NotFound(DomainError):
    status, code = 404, "NOT_FOUND"


class StateConflict(DomainError):
    status, code = 409, "STATE_CONFLICT"


class IdempotentReplay(DomainError):
    status, code = 409, "IDEMPOTENT_REPLAY"
    default_hint = "Use a new Idempotency-Key for a different request"


class ValidationFailed(DomainError):
    """Field errors: `details` maps a field path to its messages."""

    status, code = 422, "VALIDATION_ERROR"

    def __init__(self, message: str = "Invalid input", *, fields: dict[str, list[str]] | None = None, **kw: Any):
        super().__init__(message, details=fields or {}, **kw)


class RiskLimitBreach(DomainError):
    status, code = 422, "RISK_LIMIT_BREACH"


class ComplianceBlocked(DomainError):
    status, code = 422, "COMPLIANCE_BLOCKED"


class KillSwitchActive(DomainError):
    status, code = 423, "KILL_SWITCH_ACTIVE"


class PreconditionRequired(DomainError):
    status, code = 428, "PRECONDITION_REQUIRED"


class RateLimited(DomainError):
    status, code = 429, "RATE_LIMITED"

    def __init__(self, message: str, *, retry_after: int, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.headers = {**self.headers, "Retry-After": str(max(1, retry_after))}


class BrokerReject(DomainError):
    status, code = 502, "BROKER_REJECT"


class Unavailable(DomainError):
    status, code = 503, "UNAVAILABLE"

    def __init__(self, message: str, *, retry_after: int = 5, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.headers = {**self.headers, "Retry-After": str(retry_after)}


ERROR_CODES: dict[int, tuple[str, ...]] = {
    400: ("MALFORMED_REQUEST",),
    401: ("AUTHENTICATION_FAILED",),
    403: ("PERMISSION_DENIED",),
    404: ("NOT_FOUND",),
    405: ("METHOD_NOT_ALLOWED",),
    409: ("STATE_CONFLICT", "IDEMPOTENT_REPLAY"),
    422: ("VALIDATION_ERROR", "RISK_LIMIT_BREACH", "COMPLIANCE_BLOCKED"),
    423: ("KILL_SWITCH_ACTIVE",),
    428: ("PRECONDITION_REQUIRED",),
    429: ("RATE_LIMITED",),
    500: ("INTERNAL_ERROR",),
    502: ("BROKER_REJECT",),
    503: ("UNAVAILABLE",),
}
