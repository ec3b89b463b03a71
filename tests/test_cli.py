"""The `pgloadkit` console script, run as installed, in real processes, on a real PostgreSQL."""

from __future__ import annotations

import importlib.metadata
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
import types
from pathlib import Path
from typing import Any

import duckdb
import pytest
import typer

from ingest import cli
from ingest.commands.session import EXIT_OK, Session

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(sys.executable).parent / "pgloadkit"
COMMANDS = [
    [], ["ingest"], ["plan"], ["build"], ["drift"], ["runs"], ["query"], ["doctor"],
    ["version"], ["report"], ["db"], ["db", "up"], ["db", "down"], ["db", "status"], ["db", "url"],
]  # fmt: skip
UNREACHABLE = "postgresql://u:s3cret-pw@127.0.0.1:1/db"


def pgloadkit(
    *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """The installed console script with `args`, as a user runs it."""
    assert SCRIPT.is_file(), f"{SCRIPT} is missing: install the package (pip install -e .)"
    return subprocess.run(
        [str(SCRIPT), *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def one_object(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The single JSON object a --json command prints on stdout."""
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout + done.stderr
    parsed = json.loads(lines[0])
    assert isinstance(parsed, dict)
    return parsed


def assert_one_error_line(done: subprocess.CompletedProcess[str], code: int, *parts: str) -> None:
    """Exit `code`, stderr ends in exactly one `error:` line holding every part, no traceback."""
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert done.stderr.strip().splitlines()[-1] == errors[0]
    for part in parts:
        assert part in errors[0], errors[0]


def source_config(folder: Path, data: Path, schema: str, url: str, **extra: str) -> Path:
    """A one-source config loading `data` into `schema`.t, its ledger in the same schema."""
    more = "".join(f", {key}: '{value}'" for key, value in extra.items())
    path = folder / "config.yml"
    path.write_text(
        f"database: {{schema: {schema}, metadata_schema: {schema}, url: '{url}'}}\n"
        f"sources:\n  s: {{input_path: '{data}', table_name: t, if_table_exists: replace{more}}}\n"
    )
    return path


def test_the_console_script_is_declared_for_pip() -> None:
    """pyproject installs `pgloadkit` from ingest.cli:main, and typer with it."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"] == {"pgloadkit": "ingest.cli:main"}
    assert any(dep.startswith("typer") for dep in project["dependencies"])


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "pgloadkit")
def test_every_command_has_help(command: list[str]) -> None:
    """`--help` on every command exits 0 with its usage and the exit codes."""
    done = pgloadkit(*command, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"Usage: {' '.join(['pgloadkit', *command])} ")
    assert "3 drift found by `drift`; 130 interrupted" in " ".join(done.stdout.split())


def test_python_m_ingest_is_the_console_script() -> None:
    """`python -m ingest` prints the same help as `pgloadkit`."""
    module = subprocess.run(
        [sys.executable, "-m", "ingest", "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert module.returncode == 0, module.stderr
    assert module.stdout == pgloadkit("--help").stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["ingest", "--strategy", "bogus"], "'bogus' is not one of"),
        (["runs", "--limit", "x"], "'--limit'"),
        (["nope"], "No such command 'nope'"),
        (["query"], "Missing argument"),
    ],
)
def test_usage_errors_exit_2_in_one_line(args: list[str], fragment: str) -> None:
    """A wrong option or command: exit 2, one error line naming the --help to read, JSON too."""
    done = pgloadkit(*args, "--json")
    assert_one_error_line(done, 2, fragment, "--help`)")
    failed = one_object(done)
    assert (failed["status"], failed["exit_code"]) == ("failed", 2)
    assert fragment in failed["error"]


def test_version_json_names_this_package() -> None:
    """`version --json` gives pgloadkit's installed version and dbt's."""
    found = one_object(pgloadkit("version", "--json"))
    assert found["version"] == importlib.metadata.version("pgloadkit")
    assert found["versions"]["dbt-core"] == importlib.metadata.version("dbt-core")


def test_ingest_plan_runs_json_on_a_real_database(
    tmp_path: Path, database_url: str, pg_schema: str
) -> None:
    """ingest, plan and runs each print one JSON object with the figures of the real load."""
    data = tmp_path / "d.csv"
    data.write_text("a,b\n1,x\n2,y\n3,z\n")
    cfg = source_config(tmp_path, data, pg_schema, database_url)
    loaded = pgloadkit("ingest", "--config", str(cfg), "--json")
    assert loaded.returncode == 0, loaded.stderr
    report = one_object(loaded)
    assert (report["status"], report["rows_loaded"], report["table"]) == (
        "success", 3, f"{pg_schema}.t",
    )  # fmt: skip
    quiet = pgloadkit("ingest", "-c", str(cfg), "-q")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout == ""
    assert quiet.stderr.startswith(f"success: 3 of 3 rows from {data} into {pg_schema}.t")
    assert "refreshed dbt sources" not in quiet.stderr  # -q: the log is silent
    plan = one_object(pgloadkit("plan", "-c", str(cfg), "--json"))
    assert (plan["status"], plan["rows"], plan["strategy"]) == ("ok", 3, "eager")
    runs = one_object(pgloadkit("--json", "runs", "-c", str(cfg), "-n", "5"))
    assert [r["rows_loaded"] for r in runs["runs"]] == [3, 3]
    assert runs["runs"][1]["run_id"] == report["run_id"]
    page = one_object(pgloadkit("report", report["run_id"][:8], "-c", str(cfg), "--json",
                                "-o", str(tmp_path / "run.html")))  # fmt: skip
    assert page["path"] == str(tmp_path / "run.html")
    assert report["run_id"][:12] in (tmp_path / "run.html").read_text()
    both = pgloadkit("report", report["run_id"], "--latest", "-c", str(cfg))
    assert_one_error_line(both, 2, "give a run id or --latest, not both")


def test_a_failed_load_is_one_line_and_one_json_object(
    tmp_path: Path, database_url: str, pg_schema: str
) -> None:
    """A missing file: exit 1, one error line naming it, `status: failed` on stdout."""
    missing = tmp_path / "nowhere.csv"
    cfg = source_config(tmp_path, missing, pg_schema, database_url)
    done = pgloadkit("ingest", "-c", str(cfg), "--json")
    assert_one_error_line(done, 1, str(missing))
    failed = one_object(done)
    assert (failed["status"], failed["exit_code"]) == ("failed", 1)
    assert str(missing) in failed["error"]


def test_a_config_error_exits_2_naming_file_and_key(tmp_path: Path) -> None:
    """An unknown key: exit 2, the file and the key in one line, the JSON object says so."""
    cfg = tmp_path / "bad.yml"
    cfg.write_text("sources:\n  s: {input_path: x.csv, table_nme: t}\n")
    done = pgloadkit("plan", "-c", str(cfg), "--json")
    assert_one_error_line(done, 2, str(cfg), "sources.s.table_nme: unknown key")
    assert one_object(done)["error_type"] == "ConfigError"


def test_drift_exits_3_and_names_the_new_column(
    tmp_path: Path, database_url: str, pg_schema: str
) -> None:
    """No change: exit 0; a new column in the file: exit 3, `status: drift`, the column named."""
    data = tmp_path / "d.csv"
    data.write_text("a,b\n1,x\n")
    cfg = source_config(tmp_path, data, pg_schema, database_url)
    assert pgloadkit("ingest", "-c", str(cfg), "-q").returncode == 0
    same = pgloadkit("drift", "-c", str(cfg), "--json")
    assert same.returncode == 0, same.stderr
    assert one_object(same) == {"status": "ok", "files": {str(data): []}, "drifted": 0}
    data.write_text("a,b,c\n1,x,2\n")
    drifted = pgloadkit("drift", "-c", str(cfg), "--json")
    assert drifted.returncode == 3, drifted.stderr
    found = one_object(drifted)
    assert (found["status"], found["drifted"]) == ("drift", 1)
    assert found["files"][str(data)] == ["column 'c' added (bigint)"]


@pytest.fixture
def marts_home(tmp_path: Path) -> Path:
    """A state folder whose marts file holds one mart, `mart_a`."""
    home = tmp_path / "state"
    home.mkdir()
    with duckdb.connect(str(home / "marts.duckdb")) as con:
        con.execute("create table mart_a as select 1 as x, 'one' as label")
    return home


def test_query_prints_rows_and_refuses_in_one_line(marts_home: Path) -> None:
    """query --json gives columns and rows; a missing table is one line naming the marts."""
    env = {"PIPELINE_HOME": str(marts_home)}
    done = pgloadkit("query", "select * from mart_a", "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert one_object(done) == {
        "status": "ok", "columns": ["x", "label"], "rows": [{"x": 1, "label": "one"}],
        "row_count": 1,
    }  # fmt: skip
    refused = pgloadkit("query", "select * from nope", env=env)
    assert_one_error_line(refused, 1, "nope", "the marts are: mart_a")
    assert refused.stdout == ""
    as_json = pgloadkit("query", "select * from nope", "--json", env=env)
    assert one_object(as_json)["error_type"] == "QueryFailed"


def test_an_unreachable_server_says_so_at_once_then_one_line(tmp_path: Path) -> None:
    """It says it is connecting (and retrying) before the wait, then one line with the fix."""
    cfg = source_config(tmp_path, tmp_path / "d.csv", "raw", UNREACHABLE)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PIPELINE_CONNECT_RETRY": "4"}
    started = time.monotonic()
    proc = subprocess.Popen(
        [str(SCRIPT), "runs", "-c", str(cfg)], cwd=tmp_path, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    first = proc.stderr.readline()
    said_at = time.monotonic()
    rest = proc.stderr.read()
    proc.wait(timeout=60)
    ended = time.monotonic()
    assert first.startswith("connecting to PostgreSQL at 127.0.0.1:1/db: Connection refused")
    assert "retrying for 4 s" in first
    assert ended - said_at >= 3, "the message must come before the wait, not after it"
    assert ended - started < 30
    assert proc.returncode == 1
    lines = rest.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot connect to PostgreSQL at"), rest
    assert "127.0.0.1:1/db: Connection refused; fix: start the server" in lines[0]
    assert "DATABASE_URL" in lines[0] and "embedded server" in lines[0]
    assert "s3cret-pw" not in first + rest


def test_ctrl_c_while_connecting_exits_130(tmp_path: Path) -> None:
    """SIGINT during the connect retries: exit 130 and one `error: interrupted` line."""
    cfg = source_config(tmp_path, tmp_path / "d.csv", "raw", UNREACHABLE)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PIPELINE_CONNECT_RETRY": "60"}
    proc = subprocess.Popen(
        [str(SCRIPT), "runs", "-c", str(cfg), "--json"], cwd=tmp_path, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    assert proc.stderr.readline().startswith("connecting to PostgreSQL")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert err.strip().splitlines() == ["error: interrupted"]
    assert json.loads(out)["exit_code"] == 130


def test_a_command_module_registers_through_the_hook(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A module named in EXTENSIONS adds its command (as the report will) with the same session."""

    def report(s: Session) -> int:
        s.result({"report": "written"}, lambda: print("written"))
        return EXIT_OK

    def register(app: typer.Typer) -> None:
        @app.command("fake-report")
        def fake_report(ctx: typer.Context, json_out: cli.Json = False) -> None:
            """A stand-in for `report`."""
            cli.run_command(ctx, report, json_out=json_out)

    module = types.ModuleType("fake_report_module")
    module.register = register  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_report_module", module)
    monkeypatch.setattr(cli, "EXTENSIONS", ("fake_report_module",))
    assert cli.main(["fake-report", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"status": "ok", "report": "written"}
