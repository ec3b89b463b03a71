"""Memory facts about this machine and process: available RAM, cgroup limits, peak RSS."""

from __future__ import annotations

import importlib.abc
import re
import resource
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "kib": 1024, "ki": 1024,
    "m": 1000**2, "mb": 1000**2, "mib": 1024**2, "mi": 1024**2,
    "g": 1000**3, "gb": 1000**3, "gib": 1024**3, "gi": 1024**3,
    "t": 1000**4, "tb": 1000**4, "tib": 1024**4, "ti": 1024**4,
}  # fmt: skip


def parse_size(text: str) -> int:
    """Bytes in a size such as `400MB`, `2GiB` or `1073741824`.

    Raises:
        ValueError: the text is not a size.
    """
    match = _SIZE.match(text)
    if not match or (match.group(2) is None and not match.group(1)):
        raise ValueError(f"{text!r} is not a size; write e.g. 400MB or 2GiB")
    unit = (match.group(2) or "").lower()
    if unit not in _UNITS:
        raise ValueError(
            f"{text!r}: unknown unit {match.group(2)!r}; use B, KB, MB, GB, KiB, MiB, GiB"
        )
    return int(float(match.group(1)) * _UNITS[unit])


def format_size(n: float) -> str:
    """A short human size: `512 MB`, `3.2 GB`."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit in ("B", "KB", "MB") else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _cgroup_limit() -> int | None:
    """The container's memory limit (cgroup v2, then v1), or None when there is none."""
    for file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            raw = Path(file).read_text().strip()
        except OSError:
            continue
        if raw.isdigit() and int(raw) < 1 << 60:
            return int(raw)
    return None


def _cgroup_usage() -> int:
    for file in ("/sys/fs/cgroup/memory.current", "/sys/fs/cgroup/memory/memory.usage_in_bytes"):
        try:
            return int(Path(file).read_text().strip())
        except (OSError, ValueError):
            continue
    return 0


def available_memory() -> int:
    """RAM this process may still use: psutil's available, capped by any cgroup limit."""
    available = int(psutil.virtual_memory().available)
    limit = _cgroup_limit()
    if limit is not None:
        available = min(available, max(limit - _cgroup_usage(), 0))
    return available


def current_rss() -> int:
    """This process's resident set size in bytes."""
    return int(psutil.Process().memory_info().rss)


def reset_peak_rss() -> None:
    """Restart the kernel's RSS high-water mark, so a run in a long process reports its own peak.

    Linux only (`/proc/self/clear_refs`); elsewhere the mark keeps the process's whole history.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss() -> int:
    """This process's peak resident set size since the last reset, in bytes."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


class RssWatch:
    """Samples RSS on a background thread so long loads can react before memory runs out."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.latest = current_rss()
        self.peak = self.latest
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-watch", daemon=True)

    def __enter__(self) -> RssWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        process = psutil.Process()
        while not self._stop.wait(self.interval):
            self.latest = int(process.memory_info().rss)
            self.peak = max(self.peak, self.latest)


# How long jemalloc keeps freed pages before giving them back to the OS. Arrow's default, 0,
# returns them at once, so every batch faults its buffers in afresh. On lineitem SF1 (lazy,
# alternated): 184-204 thousand page faults and 0.9-1.3 kernel CPU-s with 0; about the same with
# 1 s; 95-112 thousand and 0.66-0.72 s with 10 s, at a peak RSS 10-20 MB higher (333-339 MB): a
# batch's freed pages serve the next ones instead of being unmapped and faulted in again.
DECAY_MS = 10_000


def prefer_jemalloc() -> None:
    """Let Arrow allocate from jemalloc, which returned memory sooner than mimalloc in our runs.

    Measured on a 20M-row Parquet stream: ~25 MB less peak RSS. Freed pages are kept for
    `DECAY_MS` so that the next batch reuses them. Builds without jemalloc keep their default
    pool.
    """
    import pyarrow as pa

    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
        pa.jemalloc_set_decay_ms(DECAY_MS)
    except NotImplementedError:
        pass


class _Absent(importlib.abc.MetaPathFinder):
    """Makes the named top-level modules look uninstalled to `import`."""

    def __init__(self, names: frozenset[str]) -> None:
        self.names = names

    def find_spec(self, fullname: str, path: object, target: object = None) -> None:
        if fullname.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


@contextmanager
def without_modules(*names: str) -> Iterator[None]:
    """Within the block, importing these modules (if not imported yet) fails as if uninstalled.

    pandera imports pandas whenever it is installed, for an API this project never uses: that
    costs ~45 MB of RSS and ~0.3 s in every load. pandera supports installs without pandas, so
    its polars API is imported with pandas hidden. Outside the block, pandas imports as usual.
    """
    finder = _Absent(frozenset(n for n in names if n not in sys.modules))
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


def lean_imports() -> None:
    """For this project's own entry points (tasks.py, the console script): import pandera's
    polars API with pandas hidden, before any load needs it.

    pandera imports pandas whenever it is installed, for an API this project never uses: ~45 MB
    of RSS and ~0.3 s in every load. A library must not change its host process, so
    `ingest` itself never does this; a program that wants the saving calls it first.
    """
    with without_modules("pandas"):
        import pandera.errors
        import pandera.polars  # noqa: F401
