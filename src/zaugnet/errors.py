"""The one exception type users see for bad input."""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Bad user input: a file, a field or an option that cannot be used.

    The message always names the offending file or field, so the CLI can print it as is
    and exit with a non-zero status.

    Parameters
    ----------
    where
        The file path or configuration field the problem is in.
    problem
        What is wrong, in words a user understands.
    """

    def __init__(self, where: str | Path, problem: str) -> None:
        self.where = str(where)
        self.problem = problem
        super().__init__(f"{self.where}: {problem}")
