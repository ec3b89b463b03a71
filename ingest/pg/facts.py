"""What the plan needs to know about the server and the target, read once before planning."""

from __future__ import annotations

from ingest.pg.db import Conn
from ingest.pg.target import Target, column_types
from ingest.stages.plan import ServerFacts


def read_facts(conn: Conn, target: Target) -> ServerFacts:
    """Ask the server, once, for everything `make_plan` may weigh."""
    row = conn.execute(
        "select current_setting('server_version_num')::int, current_setting('wal_level')"
    ).fetchone()
    assert row is not None
    return ServerFacts(int(str(row[0])), str(row[1]), column_types(conn, target))
