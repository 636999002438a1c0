"""User-facing errors: one sentence naming the problem and the fix.

The CLI prints `str(err)` and exits 1 for any `OlmixError`; everything else is a bug and keeps
its traceback.
"""

import errno


class OlmixError(Exception):
    """A problem the user can fix (bad config, missing file, infeasible constraint...)."""


class ConfigError(OlmixError):
    """A project file is malformed: names the file, the key and the fix."""


class DataError(OlmixError):
    """Input data is missing, empty, or inconsistent."""


class InfeasibleError(OlmixError):
    """Constraints cannot be met (e.g. repetition caps summing below 1)."""


class LockedError(OlmixError):
    """Another process holds the project lock."""


class NotTokenizedError(DataError):
    """A step that only reads the token store found a domain not tokenized yet."""


class StorageError(OlmixError):
    """A file could not be written: the disk is full, the file system read-only, permission denied."""


_STORAGE_PROBLEMS = {
    errno.ENOSPC: ("there is no space left on the device holding {file}", "free some space and run the command again"),
    errno.EDQUOT: ("the disk quota is used up writing {file}", "free some space and run the command again"),
    errno.EROFS: ("{file} is on a read-only file system", "run the command on a writable copy of the project"),
    errno.EACCES: ("permission to write {file} is denied", "fix the project folder's permissions"),
    errno.EPERM: ("permission to write {file} is denied", "fix the project folder's permissions"),
    errno.EISDIR: ("{file} is a folder", "give the path of a file"),
    errno.ENOTDIR: ("a part of {file} is a file, not a folder", "give a path whose folders are folders"),
}


def storage_error(err: OSError) -> StorageError | None:
    """The one-sentence error for a failed write (full disk, read-only file system, no permission, a
    folder where a file should be), or None for another OSError. Work finished before it stays saved: every write is atomic."""
    problem = _STORAGE_PROBLEMS.get(err.errno)
    if problem is None:
        return None
    file = err.filename if err.filename is not None else "a project file"
    what, fix = problem
    return StorageError(f"{what.format(file=file)}; {fix} (finished work is kept).")
