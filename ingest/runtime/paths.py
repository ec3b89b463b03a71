"""Where the project keeps its local state: the embedded server, DuckDB file, demo data, caches."""

from __future__ import annotations

import os
from pathlib import Path


def state_dir() -> Path:
    """The project-local state folder: `$PIPELINE_HOME`, else `.pipeline/` in the working dir."""
    configured = os.environ.get("PIPELINE_HOME")
    return Path(configured).resolve() if configured else Path.cwd().resolve() / ".pipeline"


def project_root() -> Path:
    """The folder holding `dbt_project/` and `profiles/` (the checkout this package runs from)."""
    here = Path(__file__).resolve().parents[2]  # ingest/runtime/paths.py
    if (here / "dbt_project").is_dir():
        return here
    return Path.cwd().resolve()
