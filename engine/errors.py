"""User-facing errors: one sentence naming the problem and the fix.

The CLI prints `str(err)` and exits 1 for any `OlmixError`; everything else is a bug and keeps
its traceback.
"""


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
