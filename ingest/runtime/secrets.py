"""Keep secrets out of what the project prints and stores: one place hides every password."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote

from psycopg import ProgrammingError
from psycopg.conninfo import conninfo_to_dict

_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]+@", re.I)
_KV_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s,;)]+)", re.I)


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """Replace each secret (plain or URL-encoded) and any URL or `password=` password by `***`."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, "***").replace(quote(secret, safe=""), "***")
    text = _URL_PASSWORD.sub(r"\1***@", text)
    return _KV_PASSWORD.sub(r"\1***", text)


def url_password(url: str) -> str | None:
    """The password a connection URL (or key=value string) holds, if any."""
    try:
        password = conninfo_to_dict(url).get("password")
    except ProgrammingError:
        return None
    return str(password) if password else None
