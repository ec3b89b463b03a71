"""Loads of http(s):// files from a real byte-range HTTP server started by the test."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from ingest import load_config, run_source
from ingest.config import StorageOptions
from ingest.errors import RemoteSourceError
from ingest.stages import remote
from tests.stages.remote_data import config, frame, same_values, table_rows
from tests.stages.remote_servers import SECRET, http_server


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


def test_display_url_drops_secrets() -> None:
    """A URL is shown without a password or a query string."""
    shown = remote.display_url("https://user:pw@example.com:8443/a/b.csv?sig=secret")
    assert shown == "https://example.com:8443/a/b.csv?…"


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
