"""The command session: errors as one line, and the exit code each kind of failure gets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ingest.commands.session import Options, Session, execute, one_line
from ingest.errors import ConfigError, SourceFileError, UsageError
from ingest.errors_server import DatabaseUnavailable


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("plain", "plain"),
        (
            "invalid config /c.yml:\n  - a: unknown key\n  - b: bad",
            "invalid config /c.yml: a: unknown key; b: bad",
        ),
        ("cannot read x: empty\n  fix: add rows", "cannot read x: empty; fix: add rows"),
        (
            "server in /d: failed\n--- last lines of /d/server.log ---\nFATAL: boom\n"
            "  fix: read the log",
            "server in /d: failed; fix: read the log",
        ),
    ],
)  # fmt: skip
def test_a_message_becomes_one_line(message: str, expected: str) -> None:
    """Points and fixes join the head with `; `; a log's tail is left to -v."""
    assert one_line(message) == expected


def test_verbose_keeps_the_log_tail() -> None:
    """With -v the lines after `---` stay, still on one line."""
    text = one_line("failed\n--- log ---\nFATAL: boom", verbose=True)
    assert text == "failed; --- log ---; FATAL: boom"


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ConfigError("/c.yml", ["a: unknown key"]), 2),
        (UsageError("--limit 0: give 1 or more"), 2),
        (SourceFileError("/d.csv", "no such file", "check input_path"), 1),
        (DatabaseUnavailable("h:1/db", "Connection refused"), 1),
        (KeyboardInterrupt(), 130),
    ],
)
def test_each_failure_has_its_exit_code_and_json(
    error: BaseException, code: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """execute() maps the failure to its code, one error line and one JSON object."""

    def fails(s: Session) -> int:
        raise error

    assert execute(Options(json=True, project_dir=tmp_path), fails) == code
    out, err = capsys.readouterr()
    failed = json.loads(out)
    assert (failed["status"], failed["exit_code"]) == ("failed", code)
    assert failed["error_type"] == type(error).__name__
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")


def test_a_bug_keeps_its_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An unexpected exception is not dressed up as an expected one: it propagates."""

    def broken(s: Session) -> int:
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError):
        execute(Options(json=True, project_dir=tmp_path), broken)
    assert json.loads(capsys.readouterr().out)["error_type"] == "RuntimeError"
