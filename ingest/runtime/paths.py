"""Where the project keeps its local state: the embedded server, DuckDB file, demo data, caches.

Everything hangs off the project root (the folder holding `config.yml`, `pyproject.toml` or
`dbt_project/`), never off the working directory, so a command run from another folder
(`invoke -r PATH`, `pgloadkit --project-dir PATH`) finds the same `.pipeline/` and the same
embedded server. The entry point decides the root once and exports it as `PIPELINE_PROJECT_DIR`.
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "PIPELINE_HOME"
PROJECT_ENV = "PIPELINE_PROJECT_DIR"
# Any of these marks a folder as a project root; the nearest one from the start folder up wins.
MARKERS = ("config.yml", "config.yaml", "config.toml", "pyproject.toml", "dbt_project")
STATE_FOLDER = ".pipeline"


def find_project_root(start: Path) -> Path | None:
    """The nearest folder from `start` (a folder or a file in it) up that holds a marker."""
    here = start.resolve()
    folder = here if here.is_dir() else here.parent
    for candidate in (folder, *folder.parents):
        if any((candidate / marker).exists() for marker in MARKERS):
            return candidate
    return None


def checkout_root() -> Path | None:
    """The checkout this package runs from, when it is one (an editable install)."""
    here = Path(__file__).resolve().parents[2]  # ingest/runtime/paths.py
    return here if (here / "dbt_project").is_dir() else None


def discover_root(config: Path | None = None) -> Path:
    """The root found from the config file's folder up, else from the working directory up,
    else this package's checkout, else the working directory."""
    found = find_project_root(config) if config is not None else None
    if found is None and config is not None:
        found = config.resolve().parent
    return found or find_project_root(Path.cwd()) or checkout_root() or Path.cwd().resolve()


def project_root() -> Path:
    """The project root: `$PIPELINE_PROJECT_DIR`, else `discover_root()`."""
    configured = os.environ.get(PROJECT_ENV)
    return Path(configured).expanduser().resolve() if configured else discover_root()


def state_dir() -> Path:
    """The project-local state folder: `$PIPELINE_HOME`, else `.pipeline/` in the project root."""
    configured = os.environ.get(HOME_ENV)
    return Path(configured).resolve() if configured else project_root() / STATE_FOLDER
