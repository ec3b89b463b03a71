"""Hook points: a test registers a callback; production code registers none and reads nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.runtime import hooks

PACKAGE = Path(hooks.__file__).resolve().parent.parent


def test_a_registered_hook_is_called_at_its_point_until_removed() -> None:
    """`reached` calls the point's hooks in order with the point's name; removal stops them."""
    calls: list[str] = []
    remove_first = hooks.register("copying", lambda p: calls.append(f"1:{p}"))
    remove_second = hooks.register("copying", lambda p: calls.append(f"2:{p}"))
    try:
        hooks.reached("copying")
        hooks.reached("staged")
        remove_first()
        hooks.reached("copying")
    finally:
        remove_second()
    hooks.reached("copying")
    assert calls == ["1:copying", "2:copying", "2:copying"]


def test_an_unknown_point_is_refused_naming_the_points() -> None:
    """A misspelt point is an error, not a hook that never fires."""
    with pytest.raises(ValueError, match="no hook point 'copy'; the points are profiled"):
        hooks.register("copy", lambda p: None)


def test_the_package_reads_no_failpoint_setting_and_registers_no_hook() -> None:
    """Crash points live in tests/launch.py: the package neither reads nor installs them."""
    sources = {path: path.read_text() for path in PACKAGE.rglob("*.py")}
    assert not [p for p, text in sources.items() if "FAILPOINT" in text]
    assert not [p for p, text in sources.items() if "hooks.register(" in text]
    assert set(hooks.POINTS) <= {
        word.split('"')[1]
        for text in sources.values()
        for word in text.split("reached(")[1:]
        if word.startswith('"')
    }
