"""The README and docker-compose.yml agree with each other and with the code."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from psycopg.conninfo import conninfo_to_dict

from ingest.commands import session
from ingest.pg import embedded

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
_DEFAULT = re.compile(r"\$\{[A-Z_]+:-([^}]*)\}")


def _default(value: str) -> str:
    """A compose value with its `${VAR:-default}` replaced by the default."""
    return _DEFAULT.sub(lambda m: m.group(1), value)


def test_the_readme_url_reaches_the_compose_server() -> None:
    """The README's and the compose file's DATABASE_URL are the compose defaults, off 5432."""
    service = yaml.safe_load(COMPOSE_TEXT)["services"]["postgres"]
    env = {k: _default(v) for k, v in service["environment"].items()}
    host, port, inside = _default(service["ports"][0]).split(":")
    urls = re.findall(r"export DATABASE_URL=(\S+)", README + COMPOSE_TEXT)
    assert len(urls) == 2 and urls[0] == urls[1], urls
    url = conninfo_to_dict(urls[0])
    assert (url["user"], url["password"], url["dbname"]) == (
        env["POSTGRES_USER"], env["POSTGRES_PASSWORD"], env["POSTGRES_DB"],
    )  # fmt: skip
    assert (url["host"], url["port"], inside) == (host, port, "5432")
    assert int(port) != 5432
    assert not embedded.FIRST_PORT <= int(port) < embedded.FIRST_PORT + 500


def test_the_readme_lists_every_exit_code() -> None:
    """Each exit code the commands use has a row in the README's table."""
    codes = [session.EXIT_OK, session.EXIT_FAILED, session.EXIT_USAGE, session.EXIT_DRIFT,
             session.EXIT_INTERRUPTED]  # fmt: skip
    rows = re.findall(r"^\| (\d+) \| ", README, flags=re.MULTILINE)
    assert [int(r) for r in rows] == codes
