"""Project state hangs off the project root, so any working directory finds the same state."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest.commands.session import Options, project_root_for
from ingest.pg import embedded
from ingest.runtime.paths import find_project_root, state_dir
from tests.test_cli import pgloadkit

ROOT = Path(__file__).resolve().parents[2]
# What a user's shell would not have set: each test chooses its project itself.
UNSET = ("PIPELINE_HOME", "PIPELINE_PROJECT_DIR", "DATABASE_URL", "PGHOST", "PGHOSTADDR")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project folder with a config.yml and a subfolder, away from the repo."""
    root = tmp_path / "proj"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "config.yml").write_text("sources:\n  s: {input_path: d.csv, table_name: t}\n")
    return root


@pytest.fixture
def user_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment without a chosen project, state folder or database."""
    for name in UNSET:
        monkeypatch.delenv(name, raising=False)
    return {k: v for k, v in os.environ.items() if k not in UNSET}


def test_the_root_is_the_nearest_folder_with_a_marker(project: Path, tmp_path: Path) -> None:
    """From a file or any folder below it, the root is the folder holding config.yml."""
    assert find_project_root(project / "sub" / "deeper") == project
    assert find_project_root(project / "config.yml") == project
    assert find_project_root(ROOT / "examples" / "multi.yml") == ROOT
    assert find_project_root(tmp_path) is None


def test_state_follows_the_config_not_the_working_dir(
    project: Path, tmp_path: Path, user_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--project-dir, then the config's folder, then the working directory decide the root."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert project_root_for(Options(project_dir=project)) == project
    assert project_root_for(Options(config=str(project / "config.yml"))) == project
    monkeypatch.chdir(project / "sub" / "deeper")
    assert project_root_for(Options()) == project
    monkeypatch.setenv("PIPELINE_PROJECT_DIR", str(project))
    monkeypatch.chdir(elsewhere)
    assert state_dir() == project / ".pipeline"


def test_every_way_in_names_the_same_state_folder(
    project: Path, tmp_path: Path, user_env: dict[str, str]
) -> None:
    """pgloadkit from a subfolder, from elsewhere with --project-dir or -c: one state folder."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    ways = [
        pgloadkit("db", "status", "--json", cwd=project / "sub", env=user_env),
        pgloadkit("--project-dir", str(project), "db", "status", "--json", cwd=elsewhere,
                  env=user_env),
        pgloadkit("db", "status", "--json", "--project-dir", str(project), cwd=elsewhere,
                  env=user_env),
    ]  # fmt: skip
    found = [json.loads(done.stdout) for done in ways]
    assert [f["state_dir"] for f in found] == [str(project / ".pipeline")] * 3
    assert [f["running"] for f in found] == [False] * 3


@pytest.fixture
def served(project: Path) -> Iterator[Path]:
    """The project, its embedded server stopped and relocated data removed afterwards."""
    yield project
    home = project / ".pipeline"
    try:
        embedded.stop(home)
    finally:
        link = home / "postgres" / "data"
        if link.is_symlink():  # the data was kept in the shared temp dir (we run as root)
            shutil.rmtree(link.resolve().parent, ignore_errors=True)


def test_another_folder_reuses_the_embedded_server(
    served: Path, tmp_path: Path, user_env: dict[str, str]
) -> None:
    """Started from one folder, the server is found (same pid) from another, by pgloadkit and
    by `invoke -r PROJECT`; a second one is never started."""
    project = served
    shutil.copy(ROOT / "tasks.py", project / "tasks.py")
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    up = pgloadkit("--project-dir", str(project), "db", "up", "--json", cwd=first, env=user_env)
    assert up.returncode == 0, up.stderr
    started = json.loads(up.stdout)
    again = pgloadkit("db", "up", "--json", "-c", str(project / "config.yml"), cwd=second,
                      env=user_env)  # fmt: skip
    assert again.returncode == 0, again.stderr
    invoked = subprocess.run(
        [sys.executable, "-m", "invoke", "-r", str(project), "db.status", "--json"],
        cwd=second,
        env={**user_env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert invoked.returncode == 0, invoked.stderr
    for found in (json.loads(again.stdout), json.loads(invoked.stdout)):
        assert (found["pid"], found["port"]) == (started["pid"], started["port"])
        assert found["state_dir"] == str(project / ".pipeline")
