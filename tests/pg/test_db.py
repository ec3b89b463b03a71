"""Connecting: libpq's failure read as one reason and its fix; which failures retry."""

from __future__ import annotations

import socket
import time

import pytest

from ingest.errors_server import DatabaseUnavailable
from ingest.pg.db import FIX_DATABASE, FIX_LOGIN, FIX_SERVER, connect, connect_failure

REFUSED = (
    'connection failed: connection to server at "127.0.0.1", port 1 failed: Connection refused\n'
    "\tIs the server running on that host and accepting TCP/IP connections?"
)


@pytest.mark.parametrize(
    ("message", "reason", "fix", "final"),
    [
        (REFUSED, "Connection refused", FIX_SERVER, False),
        (
            'connection failed: connection to server at "h", port 5432 failed: FATAL:  '
            'database "nodb" does not exist',
            'database "nodb" does not exist', FIX_DATABASE, True,
        ),
        (
            'connection failed: connection to server at "h", port 5432 failed: FATAL:  '
            'password authentication failed for user "u"',
            'password authentication failed for user "u"', FIX_LOGIN, True,
        ),
        (
            'connection failed: connection to server at "h", port 5432 failed: FATAL:  '
            'role "x" does not exist',
            'role "x" does not exist', FIX_LOGIN, True,
        ),
        (
            "failed to resolve host 'nohost.invalid': [Errno -2] Name or service not known",
            "failed to resolve host 'nohost.invalid': [Errno -2] Name or service not known",
            FIX_SERVER, False,
        ),
    ],
)  # fmt: skip
def test_a_connect_failure_is_one_reason_and_its_fix(
    message: str, reason: str, fix: str, final: bool
) -> None:
    """The reason is libpq's first line's last clause; a server that answered is not retried."""
    assert connect_failure(message) == (reason, fix, final)


def test_a_missing_database_fails_at_once(database_url: str) -> None:
    """A server that answers 'no such database' is not retried for the whole retry time."""
    url = database_url.rsplit("/", 1)[0] + "/no_such_database_here"
    with pytest.raises(DatabaseUnavailable) as caught:
        connect(url, retry_seconds=30)
    assert caught.value.reason == 'database "no_such_database_here" does not exist'
    assert caught.value.fix == FIX_DATABASE
    assert "\n" not in str(caught.value)


def test_the_retry_is_announced_once_with_host_and_time(caplog: pytest.LogCaptureFixture) -> None:
    """The first refused attempt logs host:port and the retry time; the error has no password."""
    with caplog.at_level("WARNING", logger="ingest"), pytest.raises(DatabaseUnavailable) as caught:
        connect("postgresql://u:pw-xyz@127.0.0.1:1/db", retry_seconds=1)
    said = [r.getMessage() for r in caplog.records]
    assert said == [
        "connecting to PostgreSQL at 127.0.0.1:1/db: Connection refused; retrying for 1 s"
    ]
    assert str(caught.value).startswith(
        "cannot connect to PostgreSQL at 127.0.0.1:1/db: Connection"
    )
    assert "pw-xyz" not in str(caught.value)


def test_a_server_that_never_answers_is_named_within_seconds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A port that takes the connection and says nothing: the retry note comes after the
    first, short attempt (2 s), not after libpq's whole 10 s timeout."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # never accepted: the kernel completes the handshake, nobody speaks
        port = silent.getsockname()[1]
        started = time.time()
        with caplog.at_level("WARNING", logger="ingest"), pytest.raises(DatabaseUnavailable):
            connect(f"postgresql://u@127.0.0.1:{port}/db", retry_seconds=8)
        ended = time.time()
    assert len(caplog.records) == 1
    said = caplog.records[0]
    assert said.getMessage().startswith(f"connecting to PostgreSQL at 127.0.0.1:{port}/db: ")
    assert said.created - started < 5
    assert ended - said.created > 3
