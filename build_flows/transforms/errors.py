"""The two ways a pass in this package stops, as plain exceptions (nothing here imports bnnflow).

:class:`UnsupportedGraph` is the user's graph: a shape the passes
deliberately do not build; its message is one line saying what and what to
do, and bnnflow's build step turns it into ``NotSupported`` naming the file.
:class:`PassOrderError` is a bug in a step: a pass received a graph on which
a pass it needs first has visibly not run.
"""

from __future__ import annotations


class UnsupportedGraph(Exception):
    """A well-formed graph of a shape these passes refuse; ``what`` is the one-line reason."""

    def __init__(self, what: str) -> None:
        self.what = what
        super().__init__(what)


class PassOrderError(RuntimeError):
    """A pass ran before a pass it depends on (the step that runs them has them in the wrong order)."""
