"""Files on a web server, read by `Range` requests with the standard library.

pyarrow has no HTTP filesystem and the libraries that do (fsspec with aiohttp, obstore) would
add a dependency for what is a ranged GET: each read of `HttpRaw` is one, retried with backoff
(0.1 s, doubling, at most 5 s) up to `StorageOptions.retries` times on a 5xx or a network error.
"""

from __future__ import annotations

import email.utils
import io
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

from ingest.config import StorageOptions
from ingest.errors import RemoteSourceError


def display_url(url: str) -> str:
    """`url` as it may be shown: without a password or a query string (a presigned signature)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "…" if parts.query else "", ""))


class HttpRaw(io.RawIOBase):
    """A file on a web server read by `Range` requests, each retried with backoff."""

    def __init__(self, url: str, size: int, options: StorageOptions) -> None:
        self._url, self._size, self._options, self._pos = url, size, options, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = max(base + offset, 0)
        return self._pos

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        want = min(len(buffer), self._size - self._pos)
        if want <= 0:
            return 0
        headers = {"Range": f"bytes={self._pos}-{self._pos + want - 1}"}
        data, _ = _http(self._url, self._options, headers, want)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


def _http(
    url: str, options: StorageOptions, headers: dict[str, str], want: int
) -> tuple[bytes, dict[str, str]]:
    """A ranged GET of `want` bytes (0: a HEAD), retried `options.retries` times; body, headers."""
    method = "GET" if want else "HEAD"
    for attempt in range(options.retries + 1):
        request = urllib.request.Request(url, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=options.timeout_s) as response:
                if want and response.status != 206:
                    raise RemoteSourceError(
                        display_url(url),
                        "the server ignores byte ranges (it sent the whole file)",
                        "serve it from a server that answers Range requests, or download it",
                    )
                body: bytes = response.read() if want else b""
                if want and len(body) != want:
                    raise ConnectionError(f"got {len(body)} of {want} bytes")
                return body, {k.lower(): v for k, v in response.headers.items()}
        except urllib.error.HTTPError as exc:
            if exc.code < 500 or attempt == options.retries:
                raise _http_failure(url, exc, options) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            if attempt == options.retries:
                raise _http_failure(url, exc, options) from None
        time.sleep(min(0.1 * 2**attempt, 5.0))
    raise AssertionError("unreachable")  # the last attempt returns or raises


def _http_failure(url: str, exc: Exception, options: StorageOptions) -> RemoteSourceError:
    if isinstance(exc, urllib.error.HTTPError):
        if exc.code == 404:
            return RemoteSourceError(display_url(url), "no such file (HTTP 404)", "check the URL")
        if exc.code in (401, 403):
            return RemoteSourceError(
                display_url(url),
                f"access denied (HTTP {exc.code})",
                "check the URL's credentials or signature",
            )
        said = f"HTTP {exc.code} {exc.reason}"
    else:
        said = str(getattr(exc, "reason", exc))
    return RemoteSourceError(
        display_url(url),
        f"the connection failed after {options.retries + 1} attempt"
        f"{'s' if options.retries else ''} ({said})",
        "check that the server is up and reachable, then run the load again",
        options.secrets(),
    )


def head(url: str, options: StorageOptions) -> tuple[int, str | None, datetime | None]:
    """A HEAD for the file's size, ETag and Last-Modified."""
    _, headers = _http(url, options, {}, 0)
    modified = headers.get("last-modified")
    stamp = email.utils.parsedate_to_datetime(modified).astimezone(UTC) if modified else None
    return int(headers.get("content-length") or 0), headers.get("etag") or None, stamp
