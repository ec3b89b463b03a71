"""One command's session: the project it runs in, where output goes, and its exit code.

The console script (`ingest.cli`) and the invoke tasks (`tasks.py`) both run every command
through `execute`, so they anchor the project, print results and errors, and exit alike.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from ingest.config import PipelineConfig
from ingest.config_load import load_config
from ingest.errors import ConfigError, IngestError, UsageError
from ingest.runtime.memory import parse_size
from ingest.runtime.paths import PROJECT_ENV, discover_root

EXIT_OK = 0
EXIT_FAILED = 1  # an expected failure: bad input, a refused load, an unreachable server
EXIT_USAGE = 2  # a wrong option or argument, or a broken config file
EXIT_DRIFT = 3  # `drift` found a difference from the last loaded schema
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
EXIT_TERMINATED = 143  # SIGTERM (128 + 15), handled the way Ctrl-C is
CONFIG_NAMES = ("config.yml", "config.yaml", "config.toml")
MEMORY_ENV = "PIPELINE_MEMORY_LIMIT"

Command = Callable[["Session"], int]


@dataclass(frozen=True)
class Options:
    """What every command accepts: output format, verbosity, the project and its config."""

    json: bool = False
    quiet: bool = False
    verbose: bool = False
    project_dir: Path | None = None
    config: str | None = None


@dataclass
class Session:
    """A running command: its options, the project root, and the consoles it writes to."""

    options: Options
    root: Path
    err: Console = field(init=False)
    out: Console = field(init=False)

    def __post_init__(self) -> None:
        """Logs go to stderr (silent under -q); results to stdout, unwrapped when piped."""
        self.err = Console(stderr=True, soft_wrap=True, quiet=self.options.quiet)
        self.out = Console() if sys.stdout.isatty() else Console(width=200, soft_wrap=True)

    @property
    def progress(self) -> bool:
        """Whether to draw progress bars: not for JSON, not under -q."""
        return not (self.options.json or self.options.quiet)

    def config_path(self) -> Path:
        """The config file: `--config` (from the working directory, else the project root),
        else the project root's config.yml / config.yaml / config.toml."""
        given = self.options.config
        if given is None:
            found = [self.root / name for name in CONFIG_NAMES if (self.root / name).is_file()]
            return found[0] if found else self.root / CONFIG_NAMES[0]
        path = Path(os.path.expanduser(given))
        if path.is_absolute() or path.exists():
            return path.resolve()
        return (self.root / path).resolve()

    def load_config(self) -> PipelineConfig:
        """The project's config, validated."""
        return load_config(self.config_path())

    def memory_limit(self, text: str | None) -> int | None:
        """`--memory-limit` (or PIPELINE_MEMORY_LIMIT) in bytes; None for the default budget."""
        named = "--memory-limit" if text else MEMORY_ENV
        text = text or os.environ.get(MEMORY_ENV)
        if not text:
            return None
        try:
            return parse_size(text)
        except ValueError as exc:
            raise UsageError(f"{named}: {exc}") from None

    def note(self, text: str) -> None:
        """A line for people on stderr (not under -q)."""
        self.err.print(text, markup=False, highlight=False)

    def outcome(self, text: str) -> None:
        """A result for people on stderr, shown even under -q (which silences the log)."""
        Console(stderr=True, soft_wrap=True).print(text, markup=False, highlight=False)

    def detail(self, text: str) -> None:
        """A line only -v shows."""
        if self.options.verbose:
            self.note(text)

    def result(self, data: dict[str, Any], human: Callable[[], None]) -> None:
        """The command's outcome: one JSON object on stdout with --json, else `human()`."""
        if self.options.json:
            print(json.dumps({"status": "ok", **data}, default=str), flush=True)
        else:
            human()


def execute(options: Options, command: Command) -> int:
    """Run `command` in its project; return its exit code, never raising for expected failures.

    An expected failure prints `error: ...` as one line on stderr (and with --json one object,
    `{"status": "failed", "error": ..., "error_type": ..., "exit_code": ...}`, on stdout). An
    unexpected one (a bug) still prints the JSON object, then raises with its traceback.
    """
    with _logging(options):
        try:
            root = project_root_for(options)
        except UsageError as exc:
            return _failed(options, exc, EXIT_USAGE)
        with _anchored(root):
            try:
                with _terminate_like_ctrl_c():
                    return command(Session(options, root))
            except (ConfigError, UsageError) as exc:
                return _failed(options, exc, EXIT_USAGE)
            except IngestError as exc:
                return _failed(options, exc, EXIT_FAILED)
            except _Terminated:  # as for Ctrl-C: the run has said what the database holds
                return _failed(options, KeyboardInterrupt("terminated"), EXIT_TERMINATED)
            except KeyboardInterrupt:  # the run has said what the database holds
                return _failed(options, KeyboardInterrupt("interrupted"), EXIT_INTERRUPTED)
            except Exception as exc:
                _report_json(options, exc, EXIT_FAILED)
                raise


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be, so a load stops the same orderly way."""


@contextmanager
def _terminate_like_ctrl_c() -> Iterator[None]:
    """While a command runs, SIGTERM (a service manager's stop) does what Ctrl-C does.

    A load then checks whether its commit went through and marks its run, instead of dying
    without a word. Only the main thread can take signals; elsewhere nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def project_root_for(options: Options) -> Path:
    """The project root: --project-dir, else PIPELINE_PROJECT_DIR, else found from the config
    file's folder up, else from the working directory up (see `ingest.runtime.paths`)."""
    if options.project_dir is not None:
        root = options.project_dir.expanduser().resolve()
        if not root.is_dir():
            raise UsageError(f"--project-dir {root}: no such folder")
        return root
    if os.environ.get(PROJECT_ENV):
        return Path(os.environ[PROJECT_ENV]).expanduser().resolve()
    config = Path(os.path.expanduser(options.config)) if options.config else None
    return discover_root(config if config is not None and config.exists() else None)


def one_line(message: str, *, verbose: bool = False) -> str:
    """An error message as one line: its head, then its points and its fix, joined by `; `.

    Details a message carries below a `---` line (a server log's tail) are kept only with -v.
    """
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    if not lines:
        return "failed"
    head, kept, detail = lines[0], [], False
    for line in lines[1:]:
        if line.startswith("---"):
            detail = True
        if detail and not verbose and not line.startswith(("fix:", "also:")):
            continue
        kept.append(line.removeprefix("- "))
    if not kept:
        return head
    return head + (" " if head.endswith(":") else "; ") + "; ".join(kept)


def _failed(options: Options, exc: BaseException, code: int) -> int:
    _report_json(options, exc, code)
    text = one_line(str(exc), verbose=options.verbose)
    # Errors print even under -q: a failure must never be silent.
    Console(stderr=True, soft_wrap=True).print(f"error: {text}", markup=False, highlight=False)
    return code


def _report_json(options: Options, exc: BaseException, code: int) -> None:
    if options.json:
        failed = {
            "status": "failed",
            "error": one_line(str(exc)) or type(exc).__name__,
            "error_type": type(exc).__name__,
            "exit_code": code,
        }
        print(json.dumps(failed), flush=True)


@contextmanager
def _anchored(root: Path) -> Iterator[None]:
    """Export the project root, so state paths and child processes (dbt) agree on it."""
    before = os.environ.get(PROJECT_ENV)
    os.environ[PROJECT_ENV] = str(root)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(PROJECT_ENV, None)
        else:
            os.environ[PROJECT_ENV] = before


class _ConsoleHandler(logging.Handler):
    """Log records from the `ingest` package as plain lines on stderr."""

    def __init__(self, console: Console) -> None:
        super().__init__()
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        self.console.print(self.format(record), markup=False, highlight=False)


@contextmanager
def _logging(options: Options) -> Iterator[None]:
    """Show the package's log records for this command: warnings under -q, debug under -v."""
    logger = logging.getLogger("ingest")
    level = logging.DEBUG if options.verbose else logging.WARNING if options.quiet else logging.INFO
    handler = _ConsoleHandler(Console(stderr=True, soft_wrap=True))
    saved = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
