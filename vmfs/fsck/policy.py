"""Who answers "Fix?": the -n / -y / -p policies and interactive questions (e2fsck's fix_problem).

The passes ask :meth:`Policy.answer` for every problem they find; this module alone decides.

* ``NO`` (-n): every answer is no; the volume is opened read-only and never written.
* ``YES`` (-y): every answer is yes, except for problems that cannot be fixed (fatal ones, and
  on VMFS6 those whose repair is not made there: the problem table's ``V6`` flag).
* ``PREEN`` (-p): yes for problems flagged ``PREEN_OK``; any other problem is "unexpected": the
  run repairs nothing and ends with exit code 4, as e2fsck -p does ("RUN fsck MANUALLY").
* ``ASK`` (no option, on a terminal): a question per problem; the answer is remembered by problem
  code and subject, so the repair run that follows the check does not ask again.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from vmfs.fsck.problems import Flag, Problem


class Mode(enum.Enum):
    NO = "no"
    YES = "yes"
    PREEN = "preen"
    ASK = "ask"


Asker = Callable[[Problem, str, str], bool]


class Policy:
    def __init__(self, mode: Mode, *, repairable: bool = True, ask: Asker | None = None) -> None:
        self.mode = mode
        #: False: every answer is no
        self.repairable = repairable
        #: the volume is VMFS6: only problems flagged V6 are repaired
        self.vmfs6 = False
        self._ask = ask
        self._answers: dict[tuple[int, str], bool] = {}
        #: set when preen mode met a problem it may not fix
        self.unexpected: list[Problem] = []

    @property
    def may_write(self) -> bool:
        return self.mode is not Mode.NO

    def answer(self, problem: Problem, subject: str, message: str) -> bool:
        """The answer to "fix ``problem`` about ``subject``?" (``message``: the problem and what a
        yes does, as the question is put)."""
        if problem.flags & (Flag.FATAL | Flag.NO_FIX) or not self.repairable:
            return False
        if self.vmfs6 and not problem.flags & Flag.V6:
            return False
        if self.mode is Mode.NO:
            return False
        if self.mode is Mode.YES:
            return True
        if self.mode is Mode.PREEN:
            if problem.flags & Flag.PREEN_OK:
                return True
            self.unexpected.append(problem)
            return False
        key = (int(problem.code), subject)
        if key not in self._answers:
            self._answers[key] = bool(self._ask(problem, subject, message)) if self._ask is not None else False
        return self._answers[key]
