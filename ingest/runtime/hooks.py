"""Named points a load passes, where a test may act: none is registered in production.

A crash test kills a run at a known moment (after profiling, mid-COPY, staged, at the swap) by
registering a callback for that point in the child process it starts (see tests/launch.py).
Production code only calls `reached`; with nothing registered it returns at once, reads no
environment and never sleeps.
"""

from __future__ import annotations

from collections.abc import Callable

Hook = Callable[[str], None]
POINTS = ("profiled", "staged", "copying", "partition", "swapping")
# The process's callbacks by point. Module state on purpose: a hook is installed by the
# process's entry point (a test's launcher) before the run, not passed down through every stage.
_HOOKS: dict[str, list[Hook]] = {}


def register(point: str, hook: Hook) -> Callable[[], None]:
    """Call `hook(point)` each time a run reaches `point`; returns a function that removes it.

    Raises:
        ValueError: `point` is not one of `POINTS`.
    """
    if point not in POINTS:
        raise ValueError(f"no hook point {point!r}; the points are {', '.join(POINTS)}")
    _HOOKS.setdefault(point, []).append(hook)

    def remove() -> None:
        _HOOKS[point].remove(hook)

    return remove


def reached(point: str) -> None:
    """A run is at `point`: call its registered hooks, in order (none by default)."""
    for hook in _HOOKS.get(point, ()):
        hook(point)
