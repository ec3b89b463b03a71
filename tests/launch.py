"""Run the CLI with a crash test's hook: `python tests/launch.py POINT RESUME invoke-args...`.

The test-only side of `ingest.runtime.hooks`: in this child process, the first time the run
reaches POINT it prints "failpoint POINT reached" on stderr and waits, so the test can kill it
or act on the server there. With RESUME a path (not "-"), the run goes on once that file
exists, and later passes of the point go straight on. Without, it waits to be killed, and so
does every later pass (another thread's), so nothing moves past the point meanwhile.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from invoke.main import program

from ingest.runtime import hooks

WAIT_S = 600
HERE = Path(__file__).resolve()


def command(config: Path, point: str | None = None, resume: Path | None = None) -> list[str]:
    """The argv of `invoke ingest --config CONFIG --json`, held at `point` if given."""
    held = [point or "-", str(resume) if resume else "-"]
    return [sys.executable, str(HERE), *held, "ingest", "--config", str(config), "--json"]


def holder(resume: Path | None) -> hooks.Hook:
    """A hook that holds the run at its first call, until `resume` exists (or for WAIT_S)."""
    held: list[str] = []

    def hold(point: str) -> None:
        if held and resume is not None:
            return
        if held:  # waiting to be killed: hold this thread too, silently
            time.sleep(WAIT_S)
            return
        held.append(point)
        print(f"failpoint {point} reached", file=sys.stderr, flush=True)
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline and not (resume and resume.exists()):
            time.sleep(0.05)

    return hold


def main(argv: list[str]) -> None:
    point, resume, *args = argv
    if point != "-":
        hooks.register(point, holder(None if resume == "-" else Path(resume)))
    program.run(["invoke", *args])


if __name__ == "__main__":
    main(sys.argv[1:])
