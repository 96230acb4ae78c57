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
    BUNDLE_DAMAGED = 3  # a bundle file changed, is missing or extra, a symlink, a pickle, or a path escapes
    BAD_SIGNATURE = 4  # a signature is missing where a key is given, or does not verify
    UNKNOWN_SCHEMA = 5  # a bundle or manifest written by an unknown (newer) format version
    DOWNGRADE = 6  # a bundle older than the installed one, without --allow-downgrade
    OBSERVATION_MISMATCH = 7  # observations whose shape the policy cannot take
    PEER_MISMATCH = 8  # the link's peer speaks another protocol version or schema, or is another device


class BadInput(ValueError):
    """Input that cannot be used as given; `str(e)` is the one line a user sees."""

    exit_code: ExitCode = ExitCode.BAD_INPUT


class BundleError(BadInput):
    """A bundle that must not be used; the exit code says why (damaged, signature, schema, version)."""

    def __init__(self, message: str, exit_code: ExitCode = ExitCode.BUNDLE_DAMAGED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class ModelError(BadInput):
    """A runtime that works here cannot load these model bytes: the file is damaged or not what it claims."""

    exit_code = ExitCode.BUNDLE_DAMAGED


class PolicyFormatError(BadInput):
    """A policy on disk (or handed in) is malformed; the message names the problem."""
