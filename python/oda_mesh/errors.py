"""Exceptions raised by the client, one per kind of failure."""

from __future__ import annotations

import re
from typing import Any, Optional


class OdaError(Exception):
    """Any failure of an ODA mesh call."""


class NodeUnreachable(OdaError):
    """No node answers at the address found (is ``oda-node run`` running?)."""


class BadRequest(OdaError):
    """The node refused the request as malformed (HTTP 400)."""


class BadArgument(BadRequest):
    """An argument does not fit the workflow's manifest; ``argument`` names it."""

    def __init__(self, message: str, argument: Optional[str]) -> None:
        super().__init__(message)
        self.argument = argument


class Unauthorized(OdaError):
    """The API token was refused (HTTP 401)."""


class NotFound(OdaError):
    """No such job, expression, workflow or blob on the node (HTTP 404)."""


class JobFailed(OdaError):
    """The job ended without a result: attempts exhausted, cancelled, or no worker."""

    def __init__(self, message: str, job: dict[str, Any]) -> None:
        super().__init__(message)
        self.job = job


class AnalysisError(JobFailed):
    """The workflow ran and reported an analysis exception (a cached, valid outcome)."""

    def __init__(self, kind: str, message: str, job: dict[str, Any]) -> None:
        super().__init__(f"{kind}: {message}", job)
        self.kind = kind
        self.message = message


class IntegrityError(OdaError):
    """Downloaded bytes do not hash to the blob id they were asked for."""


_ARGUMENT = re.compile(r"argument `([^`]+)`")


def from_status(status: int, message: str) -> OdaError:
    """The exception for an HTTP error status and the node's message."""
    if status == 400:
        found = _ARGUMENT.search(message)
        if found:
            return BadArgument(message, found.group(1))
        return BadRequest(message)
    if status == 401:
        return Unauthorized(message)
    if status == 404:
        return NotFound(message)
    return OdaError(f"HTTP {status}: {message}")
