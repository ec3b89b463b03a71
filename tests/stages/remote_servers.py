"""Real servers for the remote-input tests: moto's S3 server and a byte-range HTTP server."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

KEY_ID = "AKIAPGLOADKITTEST01"
SECRET = "pgloadkit-secret-Zq8wX3vN"  # a string no message may ever contain
BUCKET = "landing"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class S3Server:
    """A moto S3 server on 127.0.0.1, started as a child process."""

    endpoint: str
    process: subprocess.Popen[bytes]
    log: Path

    def client(self) -> Any:
        import boto3  # moto's own dependency; the tests use it only to upload

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=KEY_ID,
            aws_secret_access_key=SECRET,
            region_name="us-east-1",
        )

    def stop(self) -> None:
        """Kill the server at once (no graceful shutdown: a dropped connection)."""
        self.process.kill()
        self.process.wait(10)


@contextmanager
def s3_server(folder: Path, **env: str) -> Iterator[S3Server]:
    """Start `moto_server` on a free port and wait until it answers."""
    port = free_port()
    binary = shutil.which("moto_server", path=os.path.dirname(sys.executable)) or "moto_server"
    log = folder / f"moto-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [binary, "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
        )
    endpoint = f"http://127.0.0.1:{port}"
    server = S3Server(endpoint, process, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start: {log.read_text()}") from None
                time.sleep(0.2)
        yield server
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


@contextmanager
def checking_s3(folder: Path, bucket: str) -> Iterator[tuple[S3Server, str, str]]:
    """A moto server that checks keys: a user allowed s3:*, its key id and secret, a bucket.

    moto checks signatures once its first actions are spent (INITIAL_NO_AUTH_ACTION_COUNT):
    creating the user, its key and policy and the bucket; every later request is checked.
    """
    import boto3

    with s3_server(folder, INITIAL_NO_AUTH_ACTION_COUNT="4") as server:
        iam = boto3.client(
            "iam",
            endpoint_url=server.endpoint,
            aws_access_key_id="setup",
            aws_secret_access_key="setup",
            region_name="us-east-1",
        )
        iam.create_user(UserName="loader")
        key = iam.create_access_key(UserName="loader")["AccessKey"]
        allow = {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}
        iam.put_user_policy(
            UserName="loader",
            PolicyName="s3",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [allow]}),
        )
        boto3.client(
            "s3",
            endpoint_url=server.endpoint,
            aws_access_key_id=key["AccessKeyId"],
            aws_secret_access_key=key["SecretAccessKey"],
            region_name="us-east-1",
        ).create_bucket(Bucket=bucket)
        yield server, key["AccessKeyId"], key["SecretAccessKey"]


@dataclass
class HttpServer:
    """A static file server that answers Range requests, with the ranges it served."""

    root: Path
    url: str
    ranges: list[str] = field(default_factory=list)
    failures: list[int] = field(default_factory=lambda: [0])  # 503s to send before serving

    def fail_next(self, count: int) -> None:
        """Answer the next `count` requests with 503 Service Unavailable."""
        self.failures[0] = count


class _RangeHandler(SimpleHTTPRequestHandler):
    """http.server's file handler, plus `Range: bytes=a-b` (it serves whole files only)."""

    served: list[str]
    failures: list[int]

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def send_head(self) -> Any:
        if self.failures[0] > 0:
            self.failures[0] -= 1
            self.send_error(503)
            return None
        wanted = self.headers.get("Range")
        if not wanted:
            return super().send_head()
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return None
        size = path.stat().st_size
        start_s, end_s = wanted.removeprefix("bytes=").split("-")
        start, end = int(start_s), min(int(end_s or size - 1), size - 1)
        self.served.append(wanted)
        handle = path.open("rb")
        handle.seek(start)
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Last-Modified", self.date_time_string(int(path.stat().st_mtime)))
        self.end_headers()
        self._left = end - start + 1
        return handle

    def copyfile(self, source: Any, outputfile: Any) -> None:
        left = getattr(self, "_left", None)
        if left is None:
            super().copyfile(source, outputfile)
            return
        outputfile.write(source.read(left))


@contextmanager
def http_server(root: Path) -> Iterator[HttpServer]:
    """Serve `root` on a free port from a thread."""
    web = HttpServer(root, "")
    handler = type("Handler", (_RangeHandler,), {"served": web.ranges, "failures": web.failures})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
    web.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield web
    finally:
        server.shutdown()
        server.server_close()
