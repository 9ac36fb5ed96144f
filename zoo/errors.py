"""User-facing errors: each message is one line naming the problem and the fix."""


class ZooError(ValueError):
    """Bad input from a user (name, shape, config, data); the CLI prints it as one line, exit 2."""


class DataNotFoundError(ZooError, FileNotFoundError):
    """A data file or folder the user asked for is missing."""


def unknown_name(kind, name, valid):
    """The error for a name that is not one of `valid` (models, data sets, recipes, ...)."""
    return ZooError(f"unknown {kind} {name!r}; choose one of: {', '.join(sorted(valid))}")
