"""User-facing errors.

Every problem a user can cause (bad file, bad option) is raised as a
:class:`BnnflowError`; the CLI prints its message in one line and exits 2
instead of showing a traceback from deep inside a library.

This module is the one leaf of the project's import graph: it imports
nothing of the project, so every package (the model zoo below bnnflow's
core included) raises these errors without an import cycle
(``tests/test_contracts.py`` checks it).
"""


class BnnflowError(Exception):
    """A problem with the user's input: the message says which file, what is
    wrong and what to do."""


class DataError(BnnflowError):
    """A data set file is missing or corrupt."""


class CheckpointError(BnnflowError):
    """A checkpoint cannot be read or is not a bnnflow checkpoint."""


class NotSupported(BnnflowError):
    """A well-formed network of a shape bnnflow deliberately does not build or simulate.

    The message reads ``[where: ]not supported: <what>``; the README's list of
    refused shapes is the list of these ``what``s.
    """

    def __init__(self, what: str, where: str | None = None) -> None:
        self.what = what
        super().__init__(f"{where}: not supported: {what}" if where else f"not supported: {what}")


class DoesNotFit(BnnflowError):
    """A network whose design exceeds the board's resources at every folding bnnflow tried."""


def brief(exc: BaseException) -> str:
    """``Type: first line`` of a library's exception, cut to 200 characters: enough to say what a
    library found wrong in a user's file inside a one-line message."""
    text = str(exc)
    return f"{type(exc).__name__}: {text.splitlines()[0][:200]}" if text.strip() else type(exc).__name__
