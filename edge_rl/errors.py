"""Exit codes and the error type that marks bad input, shared by the library and the CLI.

Library code raises a `BadInput` subclass with a one-line message; the CLI prints that line
and exits with the error's code, never a traceback. Codes are an IntEnum so scripts can
branch on them by name.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILURE = 1  # the command ran but its result fails a check (e.g. a threshold)
    BAD_INPUT = 2  # unusable arguments, files, environments or settings


class BadInput(ValueError):
    """Input that cannot be used as given; `str(e)` is the one line a user sees."""

    exit_code: ExitCode = ExitCode.BAD_INPUT


class PolicyFormatError(BadInput):
    """A policy on disk (or handed in) is malformed; the message names the problem."""
