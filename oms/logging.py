"""Structured logging: one JSON object a line, with the request's trace id in every line.

The trace id is bound in a context variable by `oms.middleware.TraceMiddleware` (and by Celery
task hooks), so every log line emitted while serving a request carries it, whichever library
logged it.
"""

from __future__ import annotations

import logging
import logging.config
from typing import Any

import structlog

SECRET_FIELDS = frozenset({"password", "secret", "token", "access", "refresh", "key", "otp", "authorization"})


def _redact_secrets(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Never let a credential reach a log line, whoever logged it."""
    for field in list(event_dict):
        if field.lower() in SECRET_FIELDS:
            event_dict[field] = "[redacted]"
    return event_dict


SHARED_PROCESSORS: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    _redact_secrets,
]


def configure(config: dict[str, Any]) -> None:
    """Configure stdlib logging and structlog from the `LOGGING` setting."""
    renderer: Any = (
        structlog.processors.JSONRenderer() if config.get("json", True) else structlog.dev.ConsoleRenderer(colors=False)
    )
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {
                "structured": {
                    "()": structlog.stdlib.ProcessorFormatter,
                    "processors": [
                        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                        structlog.processors.format_exc_info,
                        renderer,
                    ],
                    "foreign_pre_chain": SHARED_PROCESSORS,
                }
            },
            "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "structured"}},
            "root": {"handlers": ["console"], "level": config.get("level", "INFO")},
            "loggers": {
                "django.server": {"level": "WARNING"},
                # Unhandled exceptions are logged by our error handler with the trace id.
                "django.request": {"level": "CRITICAL"},
            },
        }
    )
    structlog.configure(
        processors=[*SHARED_PROCESSORS, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
