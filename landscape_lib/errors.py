"""Errors a user can cause. The CLI prints them as one line and exits 2; nothing is written."""


class LandscapeError(Exception):
    """Base class for user-facing errors (bad names, bad files, missing data...)."""


class UnknownNameError(LandscapeError, KeyError):
    """A registry lookup with a name that is not registered."""

    def __str__(self):  # KeyError would quote the message
        return self.args[0] if self.args else ""


class ConfigError(LandscapeError, ValueError):
    """A malformed config, override or grid file."""


class DatasetUnavailable(LandscapeError):
    """A data set that is not on disk and cannot be downloaded."""


class StoreError(LandscapeError):
    """The store cannot be read or written (path, permissions, corruption)."""


class StoreWriteError(StoreError):
    """A file of the store (a part, a checkpoint, a resume state) could not be written: the
    disk is full, a folder is read-only... `reason` is the system's words ("No space left on
    device"); the message is one line naming the file."""

    def __init__(self, path, reason: str):
        super().__init__(f"cannot write {path}: {reason}")
        self.path, self.reason = str(path), reason

    def __reduce__(self):  # picklable across worker processes
        return type(self), (self.path, self.reason)


def check_choice(option: str, value, allowed):
    """Return `value` if it is one of `allowed`, else raise a one-line ConfigError naming them."""
    allowed = list(allowed)
    if value not in allowed:
        raise ConfigError(f"{option}={value!r} is not allowed; choose from: "
                          f"{', '.join(map(str, allowed))}")
    return value
