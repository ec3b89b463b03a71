"""Load big CSV and Parquet files into PostgreSQL on modest hardware, then build marts with dbt."""

from ingest.config import PipelineConfig, SourceConfig, load_config
from ingest.db import describe, resolve_url
from ingest.demo import write_demo
from ingest.errors import IngestError
from ingest.memory import format_size, parse_size
from ingest.plan import Plan
from ingest.profile import FileProfile
from ingest.report import RunReport
from ingest.run import Explained, explain, run_source
from ingest.status import drift_changes, recent_runs_table

__all__ = [
    "Explained",
    "FileProfile",
    "IngestError",
    "PipelineConfig",
    "Plan",
    "RunReport",
    "SourceConfig",
    "describe",
    "drift_changes",
    "explain",
    "format_size",
    "load_config",
    "parse_size",
    "recent_runs_table",
    "resolve_url",
    "run_source",
    "write_demo",
]
