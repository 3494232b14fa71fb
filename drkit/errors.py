"""drkit's one error hierarchy; each class carries the exit code documented in the README."""

from __future__ import annotations

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
    130: "interrupted",
}


class DrkitError(Exception):
    """Base of every error drkit reports as one line and an exit code."""

    exit_code = 2
    kind = "error"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class UsageError(DrkitError):
    """Bad arguments, unknown snapshot, or an option combination that makes no sense."""

    exit_code = 2
    kind = "usage"


class ConfigError(DrkitError):
    """The configuration file is missing, malformed or incomplete."""

    exit_code = 2
    kind = "config"


class ChecksFailed(DrkitError):
    """A job ran and found something wrong (a failed check, posture drift)."""

    exit_code = 1
    kind = "checks_failed"


class BackupIncomplete(DrkitError):
    """A snapshot was made but some files could not be read (restic's exit 3)."""

    exit_code = 3
    kind = "incomplete"


class StorageError(DrkitError):
    """S3 unreachable, TLS failure, bucket or repository missing."""

    exit_code = 4
    kind = "storage"


class RepositoryMissing(StorageError):
    """No restic repository at the configured location (restic's exit 10)."""

    kind = "repository_missing"


class AuthenticationError(DrkitError):
    """Wrong repository password (restic's exit 12) or refused S3 credentials."""

    exit_code = 5
    kind = "authentication"


class Refused(DrkitError):
    """Untrusted, tampered or hostile snapshot, another node's snapshot, or a non-empty target."""

    exit_code = 6
    kind = "refused"


class Busy(DrkitError):
    """Another run holds the node's lock (restic's exit 11)."""

    exit_code = 7
    kind = "busy"


class ResticMissing(DrkitError):
    """restic is not installed, not restic, or too old."""

    exit_code = 8
    kind = "restic_missing"


class LocalFilesystemError(DrkitError):
    """The target is unwritable or the disk is full."""

    exit_code = 9
    kind = "filesystem"


class ResticFailed(DrkitError):
    """restic failed in a way drkit cannot classify: killed, unknown code, unparsable output."""

    exit_code = 10
    kind = "restic_failed"


class Interrupted(DrkitError):
    """The operator or a signal interrupted the run."""

    exit_code = 130
    kind = "interrupted"
