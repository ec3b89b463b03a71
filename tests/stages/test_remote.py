"""Loads from a real S3 server (moto, started here) and a real HTTP server, as from local files."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
import psycopg
import pytest
from psycopg import sql
from rich.console import Console

from ingest import load_config, run_source
from ingest.config import StorageOptions
from ingest.errors import RemoteSourceError
from ingest.pg.copy import FAILPOINT_ENV, FAILPOINT_RESUME_ENV
from ingest.stages import remote
from tests.stages.remote_servers import (
    KEY_ID,
    SECRET,
    S3Server,
    checking_s3,
    http_server,
    s3_server,
)

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "landing"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One moto S3 server for the module, with the bucket the tests upload into."""
    with s3_server(tmp_path_factory.mktemp("moto")) as server:
        server.client().create_bucket(Bucket=BUCKET)
        yield server


def frame(rows: int, seed: int = 0) -> pl.DataFrame:
    """Rows with an integer key, a decimal-ish float, text with commas and quotes, a date, nulls."""
    ids = range(seed * 1_000_000, seed * 1_000_000 + rows)
    return pl.DataFrame(
        {
            "id": list(ids),
            "amount": [round(i * 1.25, 2) for i in ids],
            "note": [None if i % 7 == 0 else f'item "{i}", ok' for i in ids],
            "day": [date(2024, 1, 1 + i % 28) for i in ids],
        }
    )


def upload(server: S3Server, data: pl.DataFrame, key: str, tmp_path: Path, groups: int = 3) -> str:
    """Write `data` as Parquet (in `groups` row groups) or CSV by the key's suffix; upload it."""
    local = tmp_path / key.replace("/", "_")
    if key.endswith(".parquet"):
        data.write_parquet(local, row_group_size=max(data.height // groups, 1))
    else:
        data.write_csv(local)
    server.client().upload_file(str(local), BUCKET, key)
    return f"s3://{BUCKET}/{key}"


def config(
    tmp_path: Path,
    url: str,
    pg_schema: str,
    database_url: str,
    *,
    endpoint: str | None,
    table: str = "remote",
    if_exists: str = "replace",
    name: str = "remote",
    **storage: Any,
) -> Path:
    """A one-source config reading `url`, with credentials in storage_options (the secret too)."""
    options: dict[str, Any] = {"retries": 1, "timeout_s": 5, **storage}
    if endpoint:
        options |= {
            "endpoint_url": endpoint,
            "region": "us-east-1",
            "access_key_id": KEY_ID,
            "secret_access_key": SECRET,
        }
    path = tmp_path / f"{name}.yml"
    path.write_text(
        json.dumps(
            {
                "database": {
                    "url": database_url,
                    "schema": pg_schema,
                    "metadata_schema": pg_schema,
                },
                "sources": {
                    name: {
                        "input_path": url,
                        "table_name": table,
                        "if_table_exists": if_exists,
                        "storage_options": options,
                    }
                },
            }
        )
    )
    return path


def table_rows(database_url: str, schema: str, table: str = "remote") -> pl.DataFrame:
    """The loaded table without the lineage columns, ordered by id."""
    with psycopg.connect(database_url) as conn:
        cursor = conn.execute(
            sql.SQL("select id, amount, note, day from {} order by id").format(
                sql.Identifier(schema, table)
            )
        )
        names = [c.name for c in cursor.description or ()]
        return pl.DataFrame(cursor.fetchall(), schema=names, orient="row")


def text_of(database_url: str, schema: str) -> str:
    """Everything the ledger holds, as one string."""
    with psycopg.connect(database_url) as conn:
        runs = conn.execute(sql.SQL("select r::text from {}.runs r").format(sql.Identifier(schema)))
        files = conn.execute(
            sql.SQL("select f::text from {}.files f").format(sql.Identifier(schema))
        )
        return "\n".join(str(r[0]) for r in [*runs.fetchall(), *files.fetchall()])


def same_values(loaded: pl.DataFrame, source: pl.DataFrame) -> None:
    assert loaded.height == source.height
    assert loaded["id"].to_list() == source["id"].to_list()
    assert [float(x) for x in loaded["amount"]] == source["amount"].to_list()
    assert loaded["note"].to_list() == source["note"].to_list()
    # CSV dates stay text unless schema_config.date_format says otherwise
    assert [str(d) for d in loaded["day"]] == [str(d) for d in source["day"]]
    assert loaded["note"].null_count() == source["note"].null_count()


@pytest.mark.parametrize("key", ["exports/orders.parquet", "exports/orders.csv"])
def test_s3_object_loads_values_equal_to_the_source(
    s3: S3Server, tmp_path: Path, pg_schema: str, database_url: str, key: str
) -> None:
    """A Parquet or CSV object in S3 loads row for row as its source, secrets kept out."""
    data = frame(3_000)
    url = upload(s3, data, key, tmp_path)
    cfg = config(tmp_path, url, pg_schema, database_url, endpoint=s3.endpoint)
    console = Console(file=(out := io.StringIO()), width=200)
    report = run_source(load_config(cfg), console=console, progress=False)
    assert report.status == "success" and report.rows_loaded == 3_000
    assert report.file == url
    same_values(table_rows(database_url, pg_schema), data)
    seen = out.getvalue() + report.to_json()
    seen += text_of(database_url, pg_schema)
    assert url in text_of(database_url, pg_schema)  # the ledger names the object
    assert SECRET not in seen and KEY_ID not in seen


def test_s3_glob_loads_only_new_objects(
    s3: S3Server, tmp_path: Path, pg_schema: str, database_url: str
) -> None:
    """A nightly glob appends the objects it has not loaded; an unchanged object is a no-op."""
    first, second, third = frame(500, 1), frame(400, 2), frame(300, 3)
    upload(s3, first, "nightly/day1.parquet", tmp_path)
    upload(s3, second, "nightly/day2.parquet", tmp_path)
    upload(s3, frame(50, 9), "nightly/other/skip.parquet", tmp_path)  # `*` stops at `/`
    url = f"s3://{BUCKET}/nightly/*.parquet"
    cfg = load_config(
        config(tmp_path, url, pg_schema, database_url, endpoint=s3.endpoint, if_exists="append")
    )
    assert run_source(cfg, progress=False).rows_loaded == 900
    upload(s3, third, "nightly/day3.parquet", tmp_path)
    upload(s3, first, "nightly/day1.parquet", tmp_path)  # the same bytes again: same ETag
    again = run_source(cfg, progress=False)
    assert again.rows_loaded == 300
    assert sorted(again.notes) == [
        "day1.parquet: skipped, 0 rows loaded",
        "day2.parquet: skipped, 0 rows loaded",
        "day3.parquet: success, 300 rows loaded",
    ]
    seen_before = len(s3.log.read_text().splitlines())
    assert run_source(cfg, progress=False).rows_loaded == 0
    requests = s3.log.read_text().splitlines()[seen_before:]
    # A listing and one HEAD per object; not one byte of an object already loaded is read.
    assert sum('"HEAD /landing/nightly/' in r for r in requests) == 3, requests
    assert not any('"GET /landing/nightly/day' in r for r in requests), requests
    same_values(table_rows(database_url, pg_schema), pl.concat([first, second, third]))
    with psycopg.connect(database_url) as conn:
        files = conn.execute(
            sql.SQL("select path, fingerprint from {}.files order by path").format(
                sql.Identifier(pg_schema)
            )
        ).fetchall()
    assert [p for p, _ in files] == [f"s3://{BUCKET}/nightly/day{i}.parquet" for i in (1, 2, 3)]
    assert all(f.startswith("etag:") for _, f in files)


def preload(
    tmp_path: Path, pg_schema: str, database_url: str, key: str = ".parquet"
) -> pl.DataFrame:
    """Load 100 local rows into the target, so a failed remote run can be seen to leave them."""
    old = frame(100, 7)
    local = tmp_path / ("old.csv" if key.endswith(".csv") else "old.parquet")
    old.write_csv(local) if local.suffix == ".csv" else old.write_parquet(local)
    cfg = config(tmp_path, str(local), pg_schema, database_url, endpoint=None, name="old")
    run_source(load_config(cfg), progress=False)
    return old


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("s3://no-such-bucket-here/x.parquet", "the bucket 'no-such-bucket-here' does not exist"),
        (f"s3://{BUCKET}/missing/orders.parquet", "no such object"),
        (f"s3://{BUCKET}/missing/*.parquet", "no file matches"),
    ],
)
def test_missing_bucket_or_key_is_one_line_naming_the_url(
    s3: S3Server, tmp_path: Path, pg_schema: str, database_url: str, url: str, said: str
) -> None:
    """A missing bucket or key names the URL, shows no secret, and leaves the target as it was."""
    old = preload(tmp_path, pg_schema, database_url)
    cfg = config(tmp_path, url, pg_schema, database_url, endpoint=s3.endpoint, if_exists="append")
    with pytest.raises(Exception) as caught:
        run_source(load_config(cfg), progress=False)
    message = str(caught.value)
    assert message.splitlines()[0] == f"cannot read {url}: {said}"
    assert SECRET not in message and KEY_ID not in message
    same_values(table_rows(database_url, pg_schema), old)


def test_refused_credentials_name_the_url_and_not_the_secret(
    tmp_path: Path, pg_schema: str, database_url: str
) -> None:
    """A wrong secret is refused: one line with the URL, no key, the target unchanged."""
    old = preload(tmp_path, pg_schema, database_url)
    with checking_s3(tmp_path, BUCKET) as (strict, key_id, _):
        url = f"s3://{BUCKET}/orders.parquet"
        cfg = config(
            tmp_path,
            url,
            pg_schema,
            database_url,
            endpoint=None,
            endpoint_url=strict.endpoint,
            region="us-east-1",
            access_key_id=key_id,
            secret_access_key=SECRET,  # not this user's secret
        )
        with pytest.raises(RemoteSourceError) as caught:
            run_source(load_config(cfg), progress=False)
    message = str(caught.value)
    assert message.splitlines()[0] == (
        f"cannot read {url}: the credentials were refused (access denied)"
    )
    assert SECRET not in message and key_id not in message
    same_values(table_rows(database_url, pg_schema), old)


def test_credentials_from_the_environment(
    tmp_path: Path, pg_schema: str, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no keys in the config, the AWS_* variables sign the requests (moto checks them)."""
    data = frame(200)
    with checking_s3(tmp_path, BUCKET) as (strict, key_id, secret):
        local = tmp_path / "orders.csv"
        data.write_csv(local)
        import boto3

        boto3.client(
            "s3",
            endpoint_url=strict.endpoint,
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
            region_name="us-east-1",
        ).upload_file(str(local), BUCKET, "env/orders.csv")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
        monkeypatch.setenv("AWS_REGION", "us-east-1")
        url = f"s3://{BUCKET}/env/orders.csv"
        cfg = config(
            tmp_path, url, pg_schema, database_url, endpoint=None, endpoint_url=strict.endpoint
        )
        assert run_source(load_config(cfg), progress=False).rows_loaded == 200
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
        with pytest.raises(RemoteSourceError, match="credentials were refused"):
            run_source(load_config(cfg), progress=False)
    same_values(table_rows(database_url, pg_schema), data)


@pytest.mark.parametrize("key", ["drop/orders.csv", "drop/orders.parquet"])
def test_dropped_connection_mid_read_leaves_the_target(
    tmp_path: Path, pg_schema: str, database_url: str, key: str
) -> None:
    """The S3 server killed while a load copies: one line naming the URL, the old rows stay."""
    old = preload(tmp_path, pg_schema, database_url, key)
    with s3_server(tmp_path) as server:
        server.client().create_bucket(Bucket=BUCKET)
        # Many more batches than the load queues (its depth bounds how far reading runs
        # ahead), so reads are still to come when the server dies.
        url = upload(server, frame(600_000), key, tmp_path, groups=60)
        cfg = config(tmp_path, url, pg_schema, database_url, endpoint=server.endpoint)
        resume = tmp_path / "resume"
        env = {**os.environ, FAILPOINT_ENV: "copying", FAILPOINT_RESUME_ENV: str(resume)}
        argv = [sys.executable, "-m", "invoke", "ingest", "--config", str(cfg)]
        argv += ["--strategy", "streaming", "--memory-limit", "300MB"]
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert proc.stderr is not None
        before = []
        for line in proc.stderr:  # the run pauses here, with rows already sent to staging
            before.append(line)
            if "failpoint copying reached" in line:
                break
        server.stop()
        resume.touch()
        _, rest = proc.communicate(timeout=120)
        err = "".join(before) + rest
    assert proc.returncode != 0, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err
    assert any(
        line.startswith(f"error: cannot read {url}: the connection failed after 2 attempts")
        for line in lines
    ), err
    assert SECRET not in err and KEY_ID not in err
    same_values(table_rows(database_url, pg_schema), old)


@pytest.mark.parametrize("name", ["orders.parquet", "orders.csv"])
def test_http_file_loads_by_range_requests(
    tmp_path: Path, pg_schema: str, database_url: str, name: str
) -> None:
    """An http:// file loads as its source, fetched only by byte ranges."""
    data = frame(2_000)
    served = tmp_path / "www"
    served.mkdir()
    if name.endswith(".parquet"):
        data.write_parquet(served / name, row_group_size=700)
    else:
        data.write_csv(served / name)
    with http_server(served) as web:
        url = f"{web.url}/{name}"
        cfg = config(tmp_path, url, pg_schema, database_url, endpoint=None)
        report = run_source(load_config(cfg), progress=False)
        assert report.rows_loaded == 2_000 and report.file == url
        assert web.ranges and all(r.startswith("bytes=") for r in web.ranges)
    same_values(table_rows(database_url, pg_schema), data)


def test_http_missing_file_is_one_line(tmp_path: Path, pg_schema: str, database_url: str) -> None:
    """A 404 names the URL without its query string (a presigned URL's signature)."""
    (tmp_path / "www").mkdir()
    with http_server(tmp_path / "www") as web:
        url = f"{web.url}/gone.csv?X-Amz-Signature={SECRET}"
        cfg = config(tmp_path, url, pg_schema, database_url, endpoint=None)
        with pytest.raises(RemoteSourceError) as caught:
            run_source(load_config(cfg), progress=False)
    assert str(caught.value).splitlines()[0] == (
        f"cannot read {web.url}/gone.csv?…: no such file (HTTP 404)"
    )


def test_parquet_profile_reads_a_fraction_of_a_remote_file(tmp_path: Path) -> None:
    """Profiling a remote Parquet file fetches its footer and a few pages, not the file."""
    data = pl.DataFrame({"id": range(400_000), "text": [f"row {i} " * 4 for i in range(400_000)]})
    data.write_parquet(tmp_path / "big.parquet", row_group_size=10_000)  # 40 groups
    size = (tmp_path / "big.parquet").stat().st_size
    with http_server(tmp_path) as web:
        found = remote.list_files(f"{web.url}/big.parquet", StorageOptions())
        from ingest.config import CsvOptions
        from ingest.stages.profile import profile_file

        profile = profile_file(found[0], "parquet", 200, CsvOptions())
        fetched = sum(
            int(end) - int(start) + 1
            for start, end in (r.removeprefix("bytes=").split("-") for r in web.ranges)
        )
    assert profile.rows == 400_000 and profile.file_bytes == size
    assert fetched < size / 4, (fetched, size)  # 5 sampled groups of 40, and the footer


def test_fingerprint_comes_from_metadata() -> None:
    """The same ETag and size are the same content; a changed ETag is not."""
    options = StorageOptions()
    a = remote.RemoteFile("s3://b/k", 10, '"abc"', None, options)
    assert (
        a.fingerprint == remote.RemoteFile("s3://b/other", 10, '"abc"', None, options).fingerprint
    )
    assert a.fingerprint != remote.RemoteFile("s3://b/k", 10, '"abd"', None, options).fingerprint
    assert remote.RemoteFile("https://h/f.csv", 10, None, None, options).fingerprint.startswith(
        "meta:"
    )


def test_display_url_drops_secrets() -> None:
    """A URL is shown without a password or a query string."""
    shown = remote.display_url("https://user:pw@example.com:8443/a/b.csv?sig=secret")
    assert shown == "https://example.com:8443/a/b.csv?…"


@pytest.mark.parametrize(
    ("key", "pattern", "matched"),
    [
        ("b/day/1.parquet", "b/day/*.parquet", True),
        ("b/day/old/1.parquet", "b/day/*.parquet", False),
        ("b/day/old/1.parquet", "b/day/**/*.parquet", True),
        ("b/day/1.csv", "b/day/*.parquet", False),
        ("b/day/1.parquet", "b/d?y/[0-9].parquet", True),
    ],
)
def test_glob_matches_keys_segment_by_segment(key: str, pattern: str, matched: bool) -> None:
    """`*` stops at `/` as in a local glob; `**` crosses folders."""
    assert remote.matches(key, pattern) is matched


@pytest.mark.parametrize(("failures", "loads"), [(2, True), (3, False)])
def test_http_retries_a_bounded_number_of_times(
    tmp_path: Path, pg_schema: str, database_url: str, failures: int, loads: bool
) -> None:
    """With retries: 2, two 503s in a row are ridden out; a third fails naming the attempts."""
    data = frame(300)
    (tmp_path / "www").mkdir()
    data.write_csv(tmp_path / "www" / "orders.csv")
    with http_server(tmp_path / "www") as web:
        url = f"{web.url}/orders.csv"
        cfg = load_config(config(tmp_path, url, pg_schema, database_url, endpoint=None, retries=2))
        web.fail_next(failures)
        if loads:
            assert run_source(cfg, progress=False).rows_loaded == 300
            same_values(table_rows(database_url, pg_schema), data)
            return
        with pytest.raises(RemoteSourceError) as caught:
            run_source(cfg, progress=False)
    assert str(caught.value).splitlines()[0] == (
        f"cannot read {url}: the connection failed after 3 attempts (HTTP 503 Service Unavailable)"
    )
