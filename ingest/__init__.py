"""Load big CSV and Parquet files into PostgreSQL on modest hardware, then build marts with dbt."""

from ingest.config import PipelineConfig, SourceConfig
from ingest.config_load import load_config
from ingest.demo import write_demo
from ingest.errors import IngestError
from ingest.pg.db import describe, resolve_url
from ingest.run import Explained, explain, run_source
from ingest.runtime.memory import format_size, parse_size
from ingest.runtime.report import RunReport
from ingest.runtime.report_html import write_run_report
from ingest.stages.plan import Plan
from ingest.stages.profile import FileProfile
from ingest.state.status import drift_changes, recent_runs_table

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
    "write_run_report",
]
