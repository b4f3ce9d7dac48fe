"""The memory policies a benchmark compares by default: every one in the policy registry.

The registry (`reverie.memory.policy_names`) lists names sorted; benchmark tables and JSON list
them in the order of the table in `reverie.memory` (the `full` reference first, then window,
RELIC, MAG and retrieval memory), and a policy registered later follows those, by name.
"""

from __future__ import annotations

TABLE_ORDER: tuple[str, ...] = ("full", "window", "relic", "mag", "retrieval")
"""Rank of the policies of the `reverie.memory` table; it adds no policy the registry lacks."""


def default_policies() -> tuple[str, ...]:
    """Every registered memory policy, in table order (`TABLE_ORDER`), then the rest by name."""
    from reverie.memory import policy_names

    def rank(name: str) -> tuple[int, str]:
        return (TABLE_ORDER.index(name) if name in TABLE_ORDER else len(TABLE_ORDER), name)

    return tuple(sorted(policy_names(), key=rank))
