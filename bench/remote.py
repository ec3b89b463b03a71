"""The benchmark's object store: moto's S3 server on 127.0.0.1, holding the lineitem Parquet file.

Two commands read it from there: this project's ingest (an `s3://` input_path) and DuckDB with
its `httpfs` extension (installed from the `duckdb-extension-httpfs` wheel, so nothing
downloads). Each compares with the same tool reading the local file in the same run. moto keeps
objects in memory and copies each one per request, so a request costs ~0.4 s on a 230 MB
object: the figures show the cost of requests, not of a real S3's bandwidth.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml
from psycopg import sql
from pyarrow import fs

from bench.commands import Command
from ingest.errors import IngestError
from ingest.runtime.paths import project_root

BUCKET = "bench"
# moto takes any key pair; these are placeholders, not secrets.
KEY_ID = "bench"
SECRET_KEY = "bench-secret"
REGION = "us-east-1"


@dataclass(frozen=True)
class LocalS3:
    """A running moto S3 server and the URL of the uploaded Parquet file."""

    endpoint: str
    url: str

    @property
    def host(self) -> str:
        """`127.0.0.1:port`, as DuckDB's S3 secret wants it."""
        return self.endpoint.removeprefix("http://")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def local_s3(parquet: Path, logs: Path) -> Iterator[LocalS3]:
    """Start `moto_server` on a free port, upload `parquet` into it, stop it afterwards.

    Raises:
        IngestError: moto is not installed (the dev extras) or its server did not start.
    """
    binary = shutil.which("moto_server", path=os.path.dirname(sys.executable))
    binary = binary or shutil.which("moto_server")
    if binary is None:
        raise IngestError("moto_server not found; install the dev extras: pip install -e '.[dev]'")
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with (logs / "moto.log").open("wb") as out:
        process = subprocess.Popen(
            [binary, "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        _wait(endpoint, process)
        store = fs.S3FileSystem(
            access_key=KEY_ID,
            secret_key=SECRET_KEY,
            region=REGION,
            endpoint_override=f"127.0.0.1:{port}",
            scheme="http",
            allow_bucket_creation=True,
        )
        store.create_dir(BUCKET)
        # One PUT, not a multipart upload: moto reassembles parts on every ranged GET.
        with store.open_output_stream(f"{BUCKET}/{parquet.name}") as target:
            target.write(parquet.read_bytes())
        yield LocalS3(endpoint, f"s3://{BUCKET}/{parquet.name}")
    finally:
        process.kill()
        process.wait(10)


def _wait(endpoint: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise IngestError("moto_server did not start; see moto.log") from None
            time.sleep(0.2)


def ingest_source(s3: LocalS3, table: str, schema: str) -> dict[str, object]:
    """The ingest config that loads the S3 object into `schema.table`."""
    return {
        "database": {"schema": schema},
        "sources": {
            table: {
                "input_path": s3.url,
                "table_name": table,
                "if_table_exists": "replace",
                "validation_data": {"sample_size": 0.01},
                "storage_options": {
                    "endpoint_url": s3.endpoint,
                    "region": REGION,
                    "access_key_id": KEY_ID,
                    "secret_access_key": SECRET_KEY,
                },
            }
        },
    }


# Runs in its own Python, like the local DuckDB command, so its memory is measured apart.
DUCKDB_S3 = """\
import os, sys, duckdb, duckdb_extensions
url, target, extensions, host, key, secret, region = sys.argv[1:8]
con = duckdb.connect(config={"extension_directory": extensions})
for name in ("postgres", "httpfs"):  # both install from their wheels: no download
    duckdb_extensions.import_extension(name, con=con)
    con.execute(f"LOAD {name}")
quoted = [v.replace("'", "''") for v in (key, secret, host, region)]
con.execute(
    "CREATE SECRET (TYPE s3, KEY_ID '{}', SECRET '{}', ENDPOINT '{}', REGION '{}',"
    " URL_STYLE 'path', USE_SSL false)".format(*quoted)
)
conninfo = os.environ["BENCH_CONNINFO"].replace("'", "''")
con.execute(f"ATTACH '{conninfo}' AS pg (TYPE postgres)")
con.execute(f"CREATE TABLE pg.{target} AS SELECT * FROM read_parquet(?)", [url])
"""


def duckdb_argv(s3: LocalS3, target: str, extensions: str) -> tuple[str, ...]:
    """The DuckDB command that copies the S3 object into `target` (a quoted name)."""
    return (
        sys.executable,
        "-c",
        DUCKDB_S3,
        s3.url,
        target,
        extensions,
        s3.host,
        KEY_ID,
        SECRET_KEY,
        REGION,
    )


def commands(
    s3: LocalS3, duckdb: Command, database_url: str, schema: str, work: Path
) -> list[Command]:
    """DuckDB and ingest (auto) reading the object, beside the local `duckdb` command."""
    stem = duckdb.table.removesuffix("_duckdb")
    # AWS_* from the caller's shell would point the children at another store.
    env = {k: v for k, v in duckdb.env.items() if not k.startswith("AWS_")}
    duck_table, ingest_table = f"{stem}_duckdb_s3", f"{stem}_ingest_s3"
    target = sql.Identifier(schema, duck_table).as_string(None)
    extensions = duckdb.argv[-1]
    config = work / "configs" / f"{ingest_table}.yml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(yaml.safe_dump(ingest_source(s3, ingest_table, schema)), encoding="utf-8")
    argv = (sys.executable, *"-m invoke ingest --json --config".split(), str(config))
    ingest_env = {**env, "DATABASE_URL": database_url}
    return [
        Command("duckdb", "parquet@s3", "-", duck_table, duckdb_argv(s3, target, extensions), env),
        Command("ingest", "parquet@s3", "auto", ingest_table, argv, ingest_env, cwd=project_root()),
    ]
