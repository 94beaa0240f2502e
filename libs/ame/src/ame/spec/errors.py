"""The one error type the spec raises, and the problems it carries.

Every failure while reading or resolving an AME file ends up as a :class:`SpecError` holding
one :class:`Problem` per thing the user has to fix, so ``ame validate`` can show them all at
once instead of making people fix one error per run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with an AME file.

    ``line`` and ``column`` are 1-based, like editors show them; they are ``None`` when a
    problem has no single place (a reference cycle is reported at one of its members, but a
    missing file has no position at all).
    """

    file: str | None
    line: int | None
    column: int | None
    message: str

    def __str__(self) -> str:
        where = [part for part in (self.file, self.line, self.column) if part is not None]
        if not where:
            return self.message
        return ":".join(str(part) for part in where) + ": " + self.message

    def sort_key(self) -> tuple[str, int, int, str]:
        """Order problems by file and position, the order people read a file in."""
        return (self.file or "", self.line or 0, self.column or 0, self.message)


class SpecError(Exception):
    """An AME file (or a reference inside it) that cannot be used as written.

    ``str(error)`` lists every problem on its own line as ``file:line:col: message``.
    """

    def __init__(self, problems: Iterable[Problem]) -> None:
        unique = dict.fromkeys(problems)
        self.problems: list[Problem] = sorted(unique, key=Problem.sort_key)
        if not self.problems:
            # An empty SpecError would print nothing and exit non-zero: a bug, not a user error.
            raise ValueError("SpecError needs at least one problem")
        super().__init__("\n".join(str(problem) for problem in self.problems))

    @classmethod
    def single(
        cls, message: str, file: str | None = None, line: int | None = None, column: int | None = None
    ) -> SpecError:
        """Build an error with exactly one problem."""
        return cls([Problem(file=file, line=line, column=column, message=message)])
