"""Objects in S3, GCS or Azure and files over HTTP(S), read by range requests, never downloaded.

A `RemoteFile` is what a listing or a HEAD said about one object: its URL, size, ETag and
last-modified time. From it come (a) a pyarrow `NativeFile` with random access, which the Parquet
reader uses to fetch only the footer and the column chunks it reads, (b) a buffered byte stream
for CSV and format sniffing, and (c) a fingerprint of the object's metadata for the file ledger,
so that nothing is read to decide that an object is already loaded.

Object stores go through pyarrow's own filesystems (already a dependency; the AWS SDK's standard
retry strategy backs off between attempts). pyarrow has no HTTP filesystem, so `http://` and
`https://` are read with the standard library, one `Range` request per read, retried the same
bounded number of times.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, TypeVar
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs

from ingest.config import StorageOptions
from ingest.errors import RemoteSourceError
from ingest.stages.webfile import HttpRaw, display_url, head

OBJECT_STORES = {"s3": "s3", "gs": "gs", "gcs": "gs", "az": "az", "abfs": "az", "abfss": "az"}
WEB = ("http", "https")
# Bytes a stream asks for at a time: a sniff or a header line costs one request, not hundreds.
STREAM_BUFFER = 1 << 20
_T = TypeVar("_T")


def is_remote(path: str) -> bool:
    """Whether `path` is a URL this module reads (`s3://`, `gs://`, `az://`, `http(s)://`)."""
    scheme = urlsplit(path).scheme.lower()
    return "://" in path and (scheme in OBJECT_STORES or scheme in WEB)


@dataclass(frozen=True)
class RemoteFile:
    """One object or web file: its URL, what its metadata says, and how to reach it."""

    url: str = field(repr=False)  # may hold a presigned query string: shown only as `display`
    size: int
    etag: str | None
    last_modified: datetime | None
    options: StorageOptions = field(repr=False, compare=False)

    def __str__(self) -> str:
        return self.display

    @property
    def display(self) -> str:
        """The URL without secrets, for messages, reports and the ledger."""
        return display_url(self.url)

    @property
    def name(self) -> str:
        """The object's last path segment."""
        return urlsplit(self.url).path.rstrip("/").rsplit("/", 1)[-1]

    @property
    def suffixes(self) -> list[str]:
        """The name's suffixes, as `Path.suffixes` gives them."""
        parts = self.name.lstrip(".").split(".")
        return [f".{p}" for p in parts[1:]]

    @property
    def fingerprint(self) -> str:
        """The content's identity from metadata alone: ETag and size, else size and mtime.

        An ETag changes whenever the bytes do (for a multipart upload it also depends on the
        part size, so the same bytes uploaded with another part size load again). A web server
        that sends no ETag is judged by size and Last-Modified.
        """
        if self.etag:
            basis, kind = f"{self.etag}\0{self.size}", "etag"
        else:
            stamp = self.last_modified.isoformat() if self.last_modified else ""
            basis, kind = f"{self.size}\0{stamp}", "meta"
        return f"{kind}:{hashlib.blake2b(basis.encode(), digest_size=20).hexdigest()}"

    def open_input(self) -> pa.NativeFile:
        """A random-access pyarrow file: each read is one range request."""
        if _scheme(self.url) in WEB:
            return pa.PythonFile(HttpRaw(self.url, self.size, self.options), mode="r")
        store, path = _filesystem(self.url, self.options)
        return _guard(self, lambda: store.open_input_file(path))

    def open_stream(self) -> IO[bytes]:
        """A buffered, seekable byte stream; a failed read raises `RemoteSourceError`."""
        raw: io.RawIOBase = (
            HttpRaw(self.url, self.size, self.options)
            if _scheme(self.url) in WEB
            else _NativeRaw(self, self.open_input())
        )
        return io.BufferedReader(raw, buffer_size=STREAM_BUFFER)


def _scheme(url: str) -> str:
    return urlsplit(url).scheme.lower()


def _filesystem(url: str, options: StorageOptions) -> tuple[fs.FileSystem, str]:
    """The pyarrow filesystem for an object-store URL, and the object's path in it."""
    parts = urlsplit(url)
    return _store(OBJECT_STORES[parts.scheme.lower()], options), parts.netloc + parts.path


def _store(kind: str, options: StorageOptions) -> fs.FileSystem:
    """The filesystem for a kind of store; unset S3 credentials come from the AWS_* chain.

    Built per open (0.03 ms), so the library keeps no client between calls.
    """
    if kind == "gs":  # credentials: GOOGLE_APPLICATION_CREDENTIALS, or anonymous
        return fs.GcsFileSystem(
            anonymous=options.anonymous,
            endpoint_override=options.endpoint_url,
            retry_time_limit=timedelta(seconds=options.timeout_s * (options.retries + 1)),
        )
    if kind == "az":  # the account's name and key in access_key_id / secret_access_key
        return fs.AzureFileSystem(
            account_name=_plain(options.access_key_id) or "",
            account_key=_plain(options.secret_access_key),
        )
    kwargs: dict[str, object] = {
        "access_key": _plain(options.access_key_id),
        "secret_key": _plain(options.secret_access_key),
        "session_token": _plain(options.session_token),
        "anonymous": options.anonymous,
        "region": options.region,
        "connect_timeout": options.timeout_s,
        "request_timeout": options.timeout_s,
        "retry_strategy": fs.AwsStandardS3RetryStrategy(max_attempts=options.retries + 1),
    }
    if options.endpoint_url:
        endpoint = urlsplit(options.endpoint_url)
        kwargs["endpoint_override"] = endpoint.netloc or endpoint.path
        kwargs["scheme"] = endpoint.scheme or "https"
    return fs.S3FileSystem(**{k: v for k, v in kwargs.items() if v is not None})


def _plain(secret: object) -> str | None:
    value = getattr(secret, "get_secret_value", None)
    return str(value()) if value is not None else None


def list_files(pattern: str, options: StorageOptions) -> list[RemoteFile]:
    """The objects a URL names: the one object, or every object its glob matches, by key.

    A glob matches keys segment by segment (`*` stops at `/`), as a local glob does.

    Raises:
        RemoteSourceError: the bucket or the object is missing, the credentials are refused,
            or the server cannot be reached.
    """
    if _scheme(pattern) in WEB:
        size, etag, modified = head(pattern, options)
        return [RemoteFile(pattern, size, etag, modified, options)]
    store, path = _filesystem(pattern, options)
    scheme = _scheme(pattern)
    glob_at = min((path.find(c) for c in "*?[" if c in path), default=-1)
    if glob_at < 0:
        return [_stat(store, pattern, path, options)]
    prefix = path[:glob_at].rsplit("/", 1)[0]
    selector = fs.FileSelector(prefix, recursive=True, allow_not_found=True)
    infos = _guard_url(pattern, options, lambda: store.get_file_info(selector))
    if not infos:
        _check_bucket(store, pattern, path, options)
    keys = sorted(
        info.path for info in infos if info.type == fs.FileType.File and matches(info.path, path)
    )
    return [_stat(store, f"{scheme}://{key}", key, options) for key in keys]


def matches(key: str, pattern: str) -> bool:
    """Whether an object key matches a glob: `*`, `?` and `[...]` stay within one `/` segment,
    `**` spans any number of them."""
    if "**" not in pattern:
        return key.count("/") == pattern.count("/") and fnmatch.fnmatchcase(key, pattern)
    return fnmatch.fnmatchcase(key, pattern.replace("**/", "*").replace("**", "*"))


def _stat(store: fs.FileSystem, url: str, path: str, options: StorageOptions) -> RemoteFile:
    """One HEAD: size, ETag and last-modified time (a listing does not carry the ETag)."""

    def head() -> dict[bytes | str, bytes | str]:
        with store.open_input_file(path) as handle:
            return dict(handle.metadata())

    try:
        found = _guard_url(url, options, head)
    except RemoteSourceError as exc:
        if exc.reason.startswith("no such object"):
            _check_bucket(store, url, path, options)
        raise
    meta = {_text(k).lower(): _text(v) for k, v in found.items()}
    modified = meta.get("last-modified")
    return RemoteFile(
        url=url,
        size=int(meta.get("content-length") or 0),
        etag=meta.get("etag") or None,
        last_modified=datetime.fromisoformat(modified.replace("Z", "+00:00")) if modified else None,
        options=options,
    )


def _check_bucket(store: fs.FileSystem, url: str, path: str, options: StorageOptions) -> None:
    """Raise the missing bucket's error when it is the bucket, not the key, that is missing."""
    bucket = path.split("/", 1)[0]
    info = _guard_url(url, options, lambda: store.get_file_info(bucket))
    if info.type == fs.FileType.NotFound:
        raise RemoteSourceError(
            display_url(url),
            f"the bucket {bucket!r} does not exist",
            "check the bucket name in input_path",
        )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _guard(remote: RemoteFile, call: Callable[[], _T]) -> _T:
    return _guard_url(remote.url, remote.options, call)


def _guard_url(url: str, options: StorageOptions, call: Callable[[], _T]) -> _T:
    """Run `call`, turning the filesystem's error into one line that names the URL."""
    try:
        return call()
    except (OSError, pa.ArrowException) as exc:
        raise failure(url, exc, options) from None


def failure(url: str, exc: BaseException, options: StorageOptions) -> RemoteSourceError:
    """What a failed request means for the user, with the URL and without any secret."""
    said = str(exc)
    text = said.lower()
    if isinstance(exc, RemoteSourceError):
        return exc
    if "no_such_bucket" in text or "nosuchbucket" in text or "bucket does not exist" in text:
        reason, fix = "the bucket does not exist", "check the bucket name in input_path"
    elif "path does not exist" in text or "not found" in text or "nosuchkey" in text:
        reason, fix = "no such object", "check input_path (the key, or the glob's prefix)"
    elif any(
        k in text
        for k in (
            "access_denied",
            "accessdenied",
            "invalidaccesskeyid",
            "signaturedoesnotmatch",
            "forbidden",
            "403",
        )
    ):
        reason = "the credentials were refused (access denied)"
        fix = "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or storage_options"
    else:
        first = said.splitlines()[0] if said else type(exc).__name__
        reason = f"the connection failed after {_attempts(options)} ({first})"
        fix = "check that the server is up and reachable, then run the load again"
    return RemoteSourceError(display_url(url), reason, fix, options.secrets())


def _attempts(options: StorageOptions) -> str:
    count = options.retries + 1
    return f"{count} attempt{'s' if count > 1 else ''}"


class _NativeRaw(io.RawIOBase):
    """A pyarrow file as a raw stream whose errors name the URL."""

    def __init__(self, remote: RemoteFile, handle: pa.NativeFile) -> None:
        self._remote, self._handle = remote, handle

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return int(self._handle.tell())

    def seek(self, offset: int, whence: int = 0) -> int:
        return int(self._handle.seek(offset, whence))

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = _guard(self._remote, lambda: self._handle.read(len(buffer)))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._handle.close()
        super().close()


# Where a stage reads from: a local file or a remote object. The stages open either through
# these three functions and need not know which one they have.
Location = Path | RemoteFile


def open_binary(location: Location) -> IO[bytes]:
    """A seekable binary stream of a local file or a remote object."""
    if isinstance(location, RemoteFile):
        return location.open_stream()
    return location.open("rb")


def size_of(location: Location) -> int:
    """The file's or object's size in bytes."""
    return location.size if isinstance(location, RemoteFile) else location.stat().st_size


def is_file(location: Location) -> bool:
    """Whether the file exists (a remote object listed or stat'ed exists)."""
    return isinstance(location, RemoteFile) or location.is_file()


def parquet_source(location: Location) -> str | Path | pa.NativeFile:
    """What `pyarrow.parquet.ParquetFile` reads: the path, or a random-access remote file."""
    return location.open_input() if isinstance(location, RemoteFile) else location


def open_parquet(location: Location, dictionary: list[str] | None = None) -> pq.ParquetFile:
    """A Parquet reader that fetches only the footer and the column chunks it decodes.

    Locally it reads through a 1 MiB buffer and no pre-buffering. Remotely every read is a
    request, so it pre-buffers: the column chunks of the row group being read are fetched in a
    few coalesced range requests (at most 32 MiB each) instead of 1 MiB pieces. That holds a row
    group's compressed bytes in memory, so a file whose row groups exceed `PRE_BUFFER_LIMIT`
    compressed is read through an 8 MiB buffer instead: more requests, the same bound as local.
    """
    if not isinstance(location, RemoteFile):
        return pq.ParquetFile(
            location, pre_buffer=False, buffer_size=1 << 20, read_dictionary=dictionary
        )
    handle = location.open_input()
    meta = pq.read_metadata(handle)
    largest = max(
        (
            sum(g.column(c).total_compressed_size for c in range(g.num_columns))
            for g in (meta.row_group(i) for i in range(meta.num_row_groups))
        ),
        default=0,
    )
    small = largest <= PRE_BUFFER_LIMIT
    return pq.ParquetFile(
        handle,
        metadata=meta,
        pre_buffer=small,
        buffer_size=0 if small else 8 << 20,
        read_dictionary=dictionary,
    )


# Compressed bytes of a row group that pre-buffering may hold: about one batch's worth.
PRE_BUFFER_LIMIT = 64 << 20


def read_failure(location: Location, exc: BaseException) -> RemoteSourceError | None:
    """The remote error behind a failed Parquet read, or None for a local file (damage)."""
    if not isinstance(location, RemoteFile):
        return None
    if isinstance(exc, RemoteSourceError):
        return exc
    text = str(exc).lower()
    if not any(sign in text for sign in _NETWORK_SIGNS):
        return None  # the bytes arrived and do not decode: the file is damaged
    return failure(location.url, exc, location.options)


# What the AWS SDK and curl say when a request fails, as opposed to a page failing to decode.
_NETWORK_SIGNS = ("aws error", "curl", "connection", "couldn't connect", "timed out", "timeout")
