"""One command the benchmark runs and measures: which tool, on what input, into which table."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Command:
    """A child process to measure and the table it should fill."""

    tool: str
    input: str
    strategy: str
    table: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    stdin: Path | None = None
    cwd: Path | None = None
