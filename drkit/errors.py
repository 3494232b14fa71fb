"""drkit's one error hierarchy; each class carries the exit code documented in the README."""

from __future__ import annotations

import os

EXIT_CODES: dict[int, str] = {
    0: "success (a check or drill with nothing failing)",
    1: "something checked was found wrong: a failed check, drift, verify problems",
    2: "usage or configuration error",
    3: "backup incomplete: some files could not be read",
    4: "storage unreachable, bucket or repository missing, TLS failure",
    5: "authentication: wrong repository password or refused S3 credentials",
    6: "refused: untrusted, tampered or hostile snapshot; another node's snapshot; "
    "non-empty target without --force",
    7: "busy: another run holds the node's lock",
    8: "restic missing or too old",
    9: "local filesystem: target unwritable, disk full",
    10: "restic failed unexpectedly",
    11: "internal error — a drkit bug; the message says where to report it",
    130: "interrupted",
}

# Where a drkit bug is reported (the message of every InternalError names it).
ISSUE_TRACKER = "https://example.net/drkit/issues"


class DrkitError(Exception):
    """Base of every error drkit reports as one line and an exit code.

    A subclass declares its exit code (one of EXIT_CODES) and its JSON `kind` in its header,
    `class Busy(DrkitError, exit_code=7, kind="busy")`; what it leaves out it inherits.
    """

    exit_code = 2
    kind = "error"

    def __init_subclass__(
        cls, exit_code: int | None = None, kind: str | None = None, **kwargs: object
    ) -> None:
        super().__init_subclass__(**kwargs)
        if exit_code is not None:
            if exit_code not in EXIT_CODES:
                raise TypeError(f"{cls.__name__}: exit code {exit_code} is not in EXIT_CODES")
            cls.exit_code = exit_code
        if kind is not None:
            cls.kind = kind

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message
        self.lines = [message]  # what a person reads: one line, or one per problem


class UsageError(DrkitError, exit_code=2, kind="usage"):
    """Bad arguments, unknown snapshot, or an option combination that makes no sense."""


class ConfigError(DrkitError, exit_code=2, kind="config"):
    """The configuration file is missing, malformed or incomplete."""

    def __init__(self, message: str, lines: list[str] | None = None):
        super().__init__(message)
        self.lines = lines or [message]


class ChecksFailed(DrkitError, exit_code=1, kind="checks_failed"):
    """A job ran and found something wrong (a failed check, posture drift)."""


class BackupIncomplete(DrkitError, exit_code=3, kind="incomplete"):
    """A snapshot was made but some files could not be read (restic's exit 3)."""


class StorageError(DrkitError, exit_code=4, kind="storage"):
    """S3 unreachable, TLS failure, bucket or repository missing."""


class RepositoryMissing(StorageError, kind="repository_missing"):
    """No restic repository at the configured location (restic's exit 10)."""


class AuthenticationError(DrkitError, exit_code=5, kind="authentication"):
    """Wrong repository password (restic's exit 12) or refused S3 credentials."""


class Refused(DrkitError, exit_code=6, kind="refused"):
    """Untrusted, tampered or hostile snapshot, another node's snapshot, or a non-empty target."""


class Busy(DrkitError, exit_code=7, kind="busy"):
    """Another run holds the node's lock (restic's exit 11)."""


class ResticMissing(DrkitError, exit_code=8, kind="restic_missing"):
    """restic is not installed, not restic, or too old."""


class LocalFilesystemError(DrkitError, exit_code=9, kind="filesystem"):
    """The target is unwritable or the disk is full."""

    @classmethod
    def permission_denied(cls, exc: PermissionError) -> LocalFilesystemError:
        """Return the error for an EACCES/EPERM that reached the top: say what to do."""
        where = f"{exc.filename}: " if exc.filename else ""
        hint = (
            ""
            if os.geteuid() == 0
            else "; drkit reads and restores node files as root: run it as root"
        )
        return cls(f"{where}permission denied{hint}")


class ResticFailed(DrkitError, exit_code=10, kind="restic_failed"):
    """restic failed in a way drkit cannot classify: killed, unknown code, unparsable output."""


class InternalError(DrkitError, exit_code=11, kind="internal"):
    """A drkit bug: an exception drkit did not expect, in an action or a renderer."""

    @classmethod
    def from_exception(cls, exc: BaseException) -> InternalError:
        """Return the internal error of exc: its type, its message and the innermost drkit
        frame (file:line) of its traceback, and where to report it."""
        place = _drkit_place(exc)
        said = " ".join(str(exc).split())  # one line, whatever the exception holds
        text = f": {said[:200]}" if said else ""
        where = f" at {place}" if place else ""
        return cls(
            f"internal error (a drkit bug): {type(exc).__name__}{text}{where}; "
            f"please report it at {ISSUE_TRACKER}"
        )


def _drkit_place(exc: BaseException) -> str | None:
    """Return 'drkit/FILE.py:LINE' of the innermost traceback frame inside the drkit package."""
    import traceback
    from pathlib import Path

    package = Path(__file__).resolve().parent
    place = None
    for frame in traceback.extract_tb(exc.__traceback__):
        path = Path(frame.filename).resolve()
        if path.is_relative_to(package):
            place = f"drkit/{path.relative_to(package).as_posix()}:{frame.lineno}"
    return place


class Interrupted(DrkitError, exit_code=130, kind="interrupted"):
    """The operator or a signal interrupted the run."""
