"""vmfs-fsck: an e2fsck-class checker and repairer for VMFS (repairs on VMFS5 only).

The package is laid out as e2fsck is (see ``docs/SPEC.md`` and the style anchors): a problem
table (:mod:`.problems`), one policy module for the -n/-y/-p answers (:mod:`.policy`), the shared
state and context (:mod:`.context`), numbered passes (``pass1_volume`` ... ``pass6_heartbeats``),
each with a docstring contract, and :mod:`.run`, which runs them in order and computes the exit
code.  The library never prints: events go to a callback the tool supplies.
"""

from vmfs.fsck.context import Event, Finding, FsckOptions
from vmfs.fsck.policy import Mode, Policy
from vmfs.fsck.problems import BY_CODE, TABLE, Code, Flag, Problem
from vmfs.fsck.run import PASSES, ExitCode, Report, check

__all__ = [
    "BY_CODE",
    "PASSES",
    "TABLE",
    "Code",
    "Event",
    "ExitCode",
    "Finding",
    "Flag",
    "FsckOptions",
    "Mode",
    "Policy",
    "Problem",
    "Report",
    "check",
]
