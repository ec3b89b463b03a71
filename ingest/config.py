"""Read a YAML or TOML config into typed, validated settings; unknown keys are errors."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from ingest.config_merge import Keyed
from ingest.errors import ConfigError, SourceFileError
from ingest.stages.types import type_and_format

if TYPE_CHECKING:
    from ingest.stages.remote import Location

Naming = Literal["lower", "upper", "capitalize"]
Strategy = Literal["auto", "eager", "lazy", "streaming"]
# The lineage columns every loaded row carries, unless the config names them otherwise.
LOADED_AT = "_loaded_at"
RUN_ID = "_run_id"
FileFormat = Literal["auto", "csv", "tsv", "parquet", "jsonl", "arrow"]
Compression = Literal["auto", "gzip", "zstd", "none"]
OnDrift = Literal["fail", "warn", "evolve"]
Executor = Literal["local", "dask"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SchemaConfig(_Model):
    """How columns are named and typed."""

    column_naming: Naming | None = Field(
        None, description="Casing applied by the dbt staging models: lower, upper or capitalize."
    )
    date_format: bool = Field(False, description="Detect date and datetime strings and parse them.")
    data_type: dict[str, str] = Field(
        default_factory=dict,
        description="Column name to type (int64, float64, date, date:%d/%m/%Y, ...).",
    )
    decimal_precision: int | None = Field(
        None, ge=0, le=15, description="Round float columns to this many decimal places."
    )

    @field_validator("data_type")
    @classmethod
    def _known_types(cls, value: dict[str, str]) -> dict[str, str]:
        for column, name in value.items():
            try:
                type_and_format(name)
            except ValueError as exc:
                raise ValueError(f"column {column!r}: {exc}") from None
        return value


class ColumnChecks(_Model):
    """Checks on one column's values; every one is optional."""

    nullable: bool = Field(True, description="False: a null is a bad row.")
    unique: bool = Field(False, description="Values must not repeat (checked on the whole run).")
    ge: float | None = Field(None, description="Value must be >= this.")
    gt: float | None = Field(None, description="Value must be > this.")
    le: float | None = Field(None, description="Value must be <= this.")
    lt: float | None = Field(None, description="Value must be < this.")
    isin: list[str | int | float] | None = Field(None, description="Allowed values.")
    notin: list[str | int | float] | None = Field(None, description="Forbidden values.")
    str_matches: str | None = Field(None, description="Regular expression a string must match.")
    str_length: tuple[int | None, int | None] | None = Field(
        None, description="[min, max] string length; either may be null."
    )

    @field_validator("str_matches")
    @classmethod
    def _valid_regex(cls, value: str | None) -> str | None:
        # pandera compiles the pattern with Python's re and polars runs it with Rust's regex:
        # it must be valid in both, or the load would fail halfway with a traceback.
        if value is None:
            return value
        try:
            re.compile(value)
            pl.Series([""]).str.contains(value)
        except re.error as exc:
            raise ValueError(f"{value!r} is not a valid regular expression ({exc})") from None
        except pl.exceptions.PolarsError as exc:
            said = [line for line in str(exc).splitlines() if line.startswith("error: ")]
            reason = said[0].removeprefix("error: ") if said else "polars cannot compile it"
            raise ValueError(
                f"{value!r} is not a regular expression polars runs ({reason})"
            ) from None
        return value


class ValidationConfig(_Model):
    """What counts as a bad row, how many are tolerated, and how much the costly checks see."""

    sample_size: float = Field(
        0.01, gt=0, le=1, description="Fraction of rows the sampled (expensive) checks run on."
    )
    checks: dict[str, ColumnChecks] = Field(
        default_factory=dict, description="Column name to its checks."
    )
    max_bad_rows: int = Field(0, ge=0, description="Bad rows tolerated before the load fails.")
    max_bad_fraction: float | None = Field(
        None, ge=0, le=1, description="Share of bad rows tolerated before the load fails."
    )


class OsConfig(_Model):
    """The memory budget and the profiling sample."""

    os_margin: float = Field(0.3, ge=0, lt=1, description="Share of available RAM left to the OS.")
    n_rows_sample: int = Field(1000, ge=10, description="Rows sampled to profile a CSV file.")


class CsvOptions(_Model):
    """Options for reading CSV files."""

    separator: str = Field(",", min_length=1, max_length=1, description="Field separator.")
    has_header: bool = Field(True, description="The first line names the columns.")
    encoding: Literal["utf8", "utf8-lossy"] = Field("utf8", description="Text encoding.")
    null_values: list[str] = Field(default_factory=list, description="Strings read as null.")
    ragged_rows: Literal["refuse", "quarantine"] = Field(
        "refuse",
        description=(
            "A row with more or fewer fields than the header: refuse the file, naming the line,"
            " or quarantine the row (rule ragged_row), counted against max_bad_rows."
        ),
    )


class StorageOptions(_Model):
    """How to reach an object store or web server; unset keys fall back to the AWS_* variables."""

    endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint, e.g. http://127.0.0.1:9000 (MinIO, moto)."
    )
    region: str | None = Field(None, description="Bucket region; default from AWS_REGION.")
    access_key_id: SecretStr | None = Field(None, description="Key id; prefer AWS_ACCESS_KEY_ID.")
    secret_access_key: SecretStr | None = Field(
        None, description="Secret key; prefer AWS_SECRET_ACCESS_KEY."
    )
    session_token: SecretStr | None = Field(None, description="Temporary credentials' token.")
    anonymous: bool = Field(False, description="Public bucket: send no credentials.")
    retries: int = Field(
        3, ge=0, le=20, description="Network retries of a failed request, with backoff."
    )
    timeout_s: float = Field(30.0, gt=0, description="Seconds to wait on a connect or a read.")

    def secrets(self) -> list[str]:
        """The secret values, for scrubbing them out of any message."""
        held = (self.access_key_id, self.secret_access_key, self.session_token)
        return [s.get_secret_value() for s in held if s is not None]


class SourceConfig(Keyed):
    """One file (or glob) loaded into one table; `Keyed` adds if_table_exists and the keys."""

    name: str = Field(description="Source name, used by --source and in reports.")
    input_path: str = Field(description="File or glob to load, relative to the config file.")
    format: FileFormat = Field("auto", description="csv, tsv, parquet, jsonl, arrow, or auto.")
    compression: Compression = Field("auto", description="gzip, zstd, none, or auto (content).")
    table_name: str = Field(min_length=1, max_length=63, description="Target table name.")
    strategy: Strategy = Field("auto", description="Force eager, lazy or streaming loading.")
    on_drift: OnDrift = Field("fail", description="When columns change: fail, warn or evolve.")
    schema_config: SchemaConfig = Field(default_factory=SchemaConfig)
    validation_data: ValidationConfig = Field(default_factory=ValidationConfig)
    csv: CsvOptions = Field(default_factory=CsvOptions)
    storage_options: StorageOptions = Field(
        default_factory=StorageOptions, description="For s3://, gs://, az:// and http(s):// paths."
    )
    partition_rows: int | None = Field(
        None,
        ge=1,
        description=(
            "Rows of a Parquet partition, resumed whole; setting it makes any load resumable"
            " (default 1M)."
        ),
    )
    partition_bytes: int | None = Field(
        None,
        ge=1,
        description=(
            "Bytes of a CSV partition, resumed whole; setting it makes any load resumable"
            " (default 128 MiB)."
        ),
    )


class DatabaseConfig(_Model):
    """Where tables go. The URL falls back to DATABASE_URL, then to the embedded server."""

    url: SecretStr | None = Field(None, description="postgresql:// URL; prefer DATABASE_URL.")
    schema_: str = Field(
        "raw", alias="schema", min_length=1, max_length=63, description="Schema of raw tables."
    )
    workers: int | None = Field(
        None,
        ge=1,
        le=16,
        description=(
            "COPY connections; default 2, or 1 for an append into an existing table or with"
            " wal_level=minimal (see README)."
        ),
    )
    metadata_schema: str = Field(
        "_pipeline", min_length=1, max_length=63, description="Schema of the run ledger."
    )
    loaded_at_column: str = Field(LOADED_AT, description="Lineage column: load time.")
    run_id_column: str = Field(RUN_ID, description="Lineage column: run id.")
    resume_max_age_hours: float = Field(
        168,
        gt=0,
        description=(
            "A killed load's staging is kept this long for the next run to resume; older"
            " leftovers are dropped."
        ),
    )


class DaskConfig(_Model):
    """Where `executor: dask` runs the partition tasks (see README, "Executors")."""

    address: str | None = Field(
        None,
        pattern=r"^(tcp|tls|inproc|ucx)://\S+$",
        description="Scheduler of an existing cluster, e.g. tcp://host:8786; none: a local one.",
    )
    workers: int = Field(
        2,
        ge=1,
        le=64,
        description="Worker processes of the local cluster (one thread each); the memory limit"
        " applies to each.",
    )


class PipelineConfig(_Model):
    """A whole config file, normalised: shared settings and the sources."""

    path: Path
    database: DatabaseConfig
    os_configuration: OsConfig
    sources: dict[str, SourceConfig]
    dbt_project: Path | None = Field(
        None, description="The dbt project loads write staging sources into (resolved)."
    )
    legacy: bool = Field(False, description="The file has the original single-source shape.")
    executor: Executor = Field(
        "local", description="Where partition tasks run: local (this process) or dask."
    )
    dask: DaskConfig = Field(default_factory=DaskConfig)

    def source(self, name: str | None = None) -> SourceConfig:
        """The named source, or the only one when the config has one."""
        if name is None:
            if len(self.sources) == 1:
                return next(iter(self.sources.values()))
            raise ConfigError(
                self.path, [f"several sources ({', '.join(self.sources)}); pick one with --source"]
            )
        if name not in self.sources:
            raise ConfigError(
                self.path, [f"no source {name!r}; the config has {', '.join(self.sources)}"]
            )
        return self.sources[name]

    def input_file(self, source: SourceConfig) -> Path:
        """The source's path resolved against the config file's folder."""
        given = Path(os.path.expanduser(source.input_path))
        return given if given.is_absolute() else (self.path.parent / given).resolve()

    def input_key(self, source: SourceConfig) -> str:
        """The key that holds a source's input_path, as the file spells it."""
        return "path.input_path" if self.legacy else f"sources.{source.name}.input_path"

    def input_files(self, source: SourceConfig) -> list[Location]:
        """The files a source names: its one path, or every match of its glob, sorted.

        An `s3://`, `gs://`, `az://` or `http(s)://` path lists remote objects instead.

        Raises:
            RemoteSourceError: the bucket, the object or the server cannot be reached.
            SourceFileError: a local file is missing, or the glob matches none; the fix names
                the key that holds the path and the config file.
        """
        from ingest.stages import remote  # it builds on this module's StorageOptions

        if remote.is_remote(source.input_path):
            return list(remote.list_files(source.input_path, source.storage_options))
        path = self.input_file(source)
        fix = f"check {self.input_key(source)} in {self.path}"
        if not is_glob(source.input_path):
            if not path.exists():
                raise SourceFileError(path, "no such file", fix)
            return [path]
        anchor = Path(path.anchor)
        matches = sorted(anchor.glob(str(path.relative_to(anchor))))
        found: list[Location] = [p for p in matches if p.is_file()]
        if not found:
            raise SourceFileError(source.input_path, "no file matches", fix)
        return found


def is_glob(pattern: str) -> bool:
    """Whether a path has glob characters (`*`, `?`, `[`); a web URL never is one (`?` query)."""
    if pattern.lower().startswith(("http://", "https://")):
        return False
    return any(ch in pattern for ch in "*?[")
