"""User-facing errors.

Every problem a user can cause (bad file, bad option) is raised as a
:class:`BnnflowError`; the CLI prints its message in one line and exits 2
instead of showing a traceback from deep inside a library.
"""


class BnnflowError(Exception):
    """A problem with the user's input: the message says which file, what is
    wrong and what to do."""


class DataError(BnnflowError):
    """A data set file is missing or corrupt."""


class CheckpointError(BnnflowError):
    """A checkpoint cannot be read or is not a bnnflow checkpoint."""
