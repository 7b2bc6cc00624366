"""Free-memory states and the reclaim action each one calls for (W02 section 6.3).

Thresholds are fractions of machine memory: high 6 %, soft 4 %, hard 2 %, low 1 %.  Moving
down, the host drops to a state when free memory falls below that state's threshold (high ->
soft below 4 %, soft -> hard below 2 %, hard -> low below 1 %); moving up it climbs one state
only once free memory exceeds the threshold of the state above (low -> hard above 2 %, hard ->
soft above 4 %, soft -> high above 6 %).  The gap between the two rules is the hysteresis: free
memory wobbling around any one threshold changes the state at most once.

Actions: high none; soft balloon (swap where a VM has no balloon driver); hard swap; low swap
and block the VMs above their target allocation.
"""

from __future__ import annotations

STATES = ("high", "soft", "hard", "low")
ACTIONS = {"high": "none", "soft": "balloon", "hard": "swap", "low": "swap+block"}
#: default thresholds (W02)
THRESHOLDS = {"high": 0.06, "soft": 0.04, "hard": 0.02, "low": 0.01}


class FreeMemoryState:
    """The host's current state; :meth:`update` applies the transition rules to a free fraction."""

    def __init__(self, thresholds: dict[str, float] | None = None) -> None:
        self.thresholds = dict(THRESHOLDS if thresholds is None else thresholds)
        self.state = "high"
        self.changes = 0

    def update(self, free_fraction: float) -> str:
        """The state after seeing ``free_fraction`` of memory free."""
        index = STATES.index(self.state)
        while index + 1 < len(STATES) and free_fraction < self.thresholds[STATES[index + 1]]:
            index += 1  # fell below the next state's threshold
        while index > 0 and free_fraction > self.thresholds[STATES[index - 1]]:
            index -= 1  # exceeded the threshold of the state above
        if STATES[index] != self.state:
            self.changes += 1
            self.state = STATES[index]
        return self.state

    @property
    def action(self) -> str:
        return ACTIONS[self.state]
