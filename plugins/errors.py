"""The one exception tree of lampstand, shared by the server and every plugin.

Each class knows its HTTP status and OpenAI error type; the server renders any of them
into the OpenAI error envelope in one handler. Nothing decides on an error by its message.

    LampstandError                      500 server_error
    ├── InvalidRequest                  400 invalid_request_error
    │   ├── ContextLengthExceeded       400 code=context_length_exceeded
    │   ├── UnsupportedParameter        400 code=unsupported_parameter
    │   ├── CapabilityMissing           400 code=model_not_capable
    │   ├── InvalidModelFile            400 code=invalid_model_file
    │   └── PathNotAllowed              400 code=path_not_allowed
    ├── AuthenticationFailed            401 authentication_error
    ├── ModelNotFound                   404 code=model_not_found
    ├── NotFound                        404 code=not_found (a file, job or image by id)
    ├── PayloadTooLarge                 413 code=payload_too_large
    ├── HeadersTooLarge                 431 code=headers_too_large
    ├── ModelUnavailable                424 code=model_unavailable (load failed; will repeat)
    ├── WorkerCrashed                   502 code=worker_crashed (the model's process died)
    ├── Overloaded                      503 code=overloaded (Retry-After)
    │   ├── QueueFull                   429 code=queue_full
    │   ├── MemoryBudgetExceeded        503 code=memory_budget_exceeded
    │   └── ShuttingDown                503 code=shutting_down
    ├── RequestTimeout                  504 code=request_timeout
    └── ConfigError                     raised at start-up, never over HTTP
"""

from __future__ import annotations

__all__ = [
    "LampstandError",
    "InvalidRequest",
    "ContextLengthExceeded",
    "UnsupportedParameter",
    "CapabilityMissing",
    "InvalidModelFile",
    "PathNotAllowed",
    "HeadersTooLarge",
    "WorkerCrashed",
    "QueueFull",
    "MemoryBudgetExceeded",
    "ShuttingDown",
    "RequestTimeout",
    "SlowClient",
    "AuthenticationFailed",
    "ModelNotFound",
    "NotFound",
    "PayloadTooLarge",
    "ModelUnavailable",
    "FeatureDisabled",
    "Forbidden",
    "Overloaded",
    "ConfigError",
]


class LampstandError(Exception):
    """Base of every error lampstand raises on purpose."""

    status_code: int = 500
    error_type: str = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def envelope(self) -> dict[str, dict[str, str | None]]:
        """The OpenAI error body for this error."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(LampstandError):
    """The request is malformed or asks for something impossible."""

    status_code = 400
    error_type = "invalid_request_error"


class ContextLengthExceeded(InvalidRequest):
    """Prompt plus requested completion does not fit the model's context."""

    code = "context_length_exceeded"


class UnsupportedParameter(InvalidRequest):
    """A parameter the model or endpoint does not support."""

    code = "unsupported_parameter"


class CapabilityMissing(InvalidRequest):
    """The named model cannot serve this kind of request."""

    code = "model_not_capable"


class InvalidModelFile(InvalidRequest):
    """A model file that is damaged, hostile or of a format lampstand does not open."""

    code = "invalid_model_file"


class PathNotAllowed(InvalidRequest):
    """A path a request named is outside the configured roots, or not a plain file."""

    code = "path_not_allowed"


class AuthenticationFailed(LampstandError):
    """Missing or wrong API key."""

    status_code = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class ModelNotFound(LampstandError):
    """No configured model or alias has this id."""

    status_code = 404
    error_type = "invalid_request_error"
    code = "model_not_found"


class NotFound(LampstandError):
    """No file, job, checkpoint or generated image has this id."""

    status_code = 404
    error_type = "invalid_request_error"
    code = "not_found"


class PayloadTooLarge(LampstandError):
    """The request body is over the configured limit."""

    status_code = 413
    error_type = "invalid_request_error"
    code = "payload_too_large"


class HeadersTooLarge(LampstandError):
    """Too many request headers, or too many bytes of them."""

    status_code = 431
    error_type = "invalid_request_error"
    code = "headers_too_large"


class Forbidden(LampstandError):
    """The server refuses the request whoever sends it (a web page's cross-site request)."""

    status_code = 403
    error_type = "permission_error"


class FeatureDisabled(LampstandError):
    """The request needs a part of the server its configuration leaves off."""

    status_code = 403
    error_type = "permission_error"
    code = "feature_disabled"


class ModelUnavailable(LampstandError):
    """The model could not be loaded (missing file, offline download, bad weights).

    A 4xx on purpose: the failure repeats until the configuration changes, so clients
    must not retry it the way they retry 5xx answers.
    """

    status_code = 424
    error_type = "model_unavailable"
    code = "model_unavailable"


class Overloaded(LampstandError):
    """The server cannot take this request now; the client may retry later."""

    status_code = 503
    error_type = "overloaded_error"
    code = "overloaded"

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class QueueFull(Overloaded):
    """The model's queue is full; decided before any work is done for the request."""

    status_code = 429
    error_type = "rate_limit_error"
    code = "queue_full"


class MemoryBudgetExceeded(Overloaded):
    """Loading the model would exceed the memory budget, and nothing idle can be evicted."""

    code = "memory_budget_exceeded"


class ShuttingDown(Overloaded):
    """The server is draining before it exits."""

    code = "shutting_down"


class WorkerCrashed(LampstandError):
    """The process hosting the model died while serving this request."""

    status_code = 502
    error_type = "server_error"
    code = "worker_crashed"


class RequestTimeout(LampstandError):
    """The request ran past the server's `request_timeout`."""

    status_code = 504
    error_type = "timeout_error"
    code = "request_timeout"


class SlowClient(LampstandError):
    """The client stopped sending its request's headers or body for longer than the server waits."""

    status_code = 408
    error_type = "invalid_request_error"
    code = "client_too_slow"


class ConfigError(LampstandError):
    """The configuration is invalid; start-up stops with this one line."""
