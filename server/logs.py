"""Structured logs: one JSON object per line (or plain text), with the request id attached.

Every module logs through the standard `logging` module with `extra={...}` fields; structlog
renders them, adds the time, level, logger and whatever the request bound (its id). Prompt
text is only ever logged at debug level.
"""

from __future__ import annotations

import logging

import structlog

__all__ = ["configure_logging", "bind_request", "clear_request"]


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    """Send every logger (ours, uvicorn's, libraries') through one structlog formatter."""
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
    ]
    renderer = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    handler = logging.StreamHandler()
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, renderer],
    ))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def bind_request(request_id: str) -> None:
    """Attach the request id to every log line of the current request."""
    structlog.contextvars.bind_contextvars(request_id=request_id)


def clear_request() -> None:
    """Forget the current request's bound fields."""
    structlog.contextvars.clear_contextvars()
