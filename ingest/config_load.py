"""Load a config file: YAML or TOML, in the original project's single-source shape or with many
sources, into a validated `PipelineConfig`; unknown keys are errors."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import yaml
from dotenv import load_dotenv
from pydantic import Field, SecretStr, ValidationError

from ingest.config import (
    LOADED_AT,
    RUN_ID,
    Compression,
    CsvOptions,
    DaskConfig,
    DatabaseConfig,
    Executor,
    FileFormat,
    OnDrift,
    OsConfig,
    PipelineConfig,
    SchemaConfig,
    SourceConfig,
    StorageOptions,
    Strategy,
    ValidationConfig,
    _Model,
)
from ingest.config_merge import Keyed
from ingest.config_text import interpolate, validation_problems
from ingest.errors import ConfigError


# The original project's single-source shape, kept loadable unchanged.
class _LegacyPath(_Model):
    input_path: str


class _LegacyDatabase(Keyed):  # the original shape keeps the keyed settings here too
    table_name: str = Field(min_length=1, max_length=63)
    url: SecretStr | None = None
    schema_: str = Field("raw", alias="schema", min_length=1, max_length=63)
    workers: int | None = Field(None, ge=1, le=16)
    metadata_schema: str = Field("_pipeline", min_length=1, max_length=63)
    loaded_at_column: str = LOADED_AT
    run_id_column: str = RUN_ID
    resume_max_age_hours: float = Field(168, gt=0)


class _LegacyFile(_Model):
    path: _LegacyPath
    schema_config: SchemaConfig = Field(default_factory=SchemaConfig)
    validation_data: ValidationConfig = Field(default_factory=ValidationConfig)
    os_configuration: OsConfig = Field(default_factory=OsConfig)
    database: _LegacyDatabase
    format: FileFormat = "auto"
    strategy: Strategy = "auto"
    on_drift: OnDrift = "fail"
    csv: CsvOptions = Field(default_factory=CsvOptions)
    storage_options: StorageOptions = Field(default_factory=StorageOptions)
    partition_rows: int | None = Field(None, ge=1)
    partition_bytes: int | None = Field(None, ge=1)
    dbt_project: str | None = Field(
        None,
        min_length=1,
        description="dbt project folder (relative to this file) that loads write sources into.",
    )


class _SourceEntry(Keyed):
    input_path: str
    name: str | None = None
    format: FileFormat = "auto"
    compression: Compression = "auto"
    table_name: str | None = Field(None, min_length=1, max_length=63)
    strategy: Strategy = "auto"
    on_drift: OnDrift = "fail"
    schema_config: SchemaConfig = Field(default_factory=SchemaConfig)
    validation_data: ValidationConfig = Field(default_factory=ValidationConfig)
    csv: CsvOptions = Field(default_factory=CsvOptions)
    storage_options: StorageOptions = Field(default_factory=StorageOptions)
    partition_rows: int | None = Field(None, ge=1)
    partition_bytes: int | None = Field(None, ge=1)


class _MultiFile(_Model):
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    os_configuration: OsConfig = Field(default_factory=OsConfig)
    sources: dict[str, _SourceEntry] | list[_SourceEntry]
    dbt_project: str | None = Field(
        None,
        min_length=1,
        description="dbt project folder (relative to this file) that loads write sources into.",
    )
    executor: Executor = "local"
    dask: DaskConfig = Field(default_factory=DaskConfig)


def _parse(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(path, ["file not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, [f"cannot read it: {exc}"]) from None
    try:
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(path, [f"not valid {path.suffix.lstrip('.') or 'YAML'}: {exc}"]) from None
    if not isinstance(data, dict):
        raise ConfigError(path, ["the top level must be a mapping of keys"])
    return data


def load_config(path: Path | str) -> PipelineConfig:
    """Read and validate a config file in either the original or the multi-source shape.

    Args:
        path: a `.yml`, `.yaml` or `.toml` file.

    Returns:
        The normalised config, with one entry per source.

    Raises:
        ConfigError: the file is missing, unparsable, or has a wrong or unknown key; the message
            names the file and every offending key.
    """
    path = Path(path).resolve()
    # Secrets may live in a .env file beside the config or in the working directory; the real
    # environment wins over both.
    for env_file in (path.parent / ".env", Path.cwd() / ".env"):
        if env_file.is_file():
            load_dotenv(env_file, override=False)
    problems: list[str] = []
    data = interpolate(_parse(path), "", problems)
    if problems:
        raise ConfigError(path, problems)
    try:
        if "path" in data:
            legacy = _LegacyFile.model_validate(data)
            db = legacy.database
            source = SourceConfig(
                name=db.table_name,
                input_path=legacy.path.input_path,
                format=legacy.format,
                table_name=db.table_name,
                if_table_exists=db.if_table_exists,
                primary_key=db.primary_key,
                merge=db.merge,
                incremental=db.incremental,
                strategy=legacy.strategy,
                on_drift=legacy.on_drift,
                schema_config=legacy.schema_config,
                validation_data=legacy.validation_data,
                csv=legacy.csv,
                storage_options=legacy.storage_options,
                partition_rows=legacy.partition_rows,
                partition_bytes=legacy.partition_bytes,
            )
            return PipelineConfig(
                path=path,
                database=DatabaseConfig.model_validate(
                    db.model_dump(by_alias=True, exclude=_SOURCE_KEYS)
                ),
                os_configuration=legacy.os_configuration,
                sources={source.name: source},
                dbt_project=_folder(path, legacy.dbt_project),
                legacy=True,
            )
        multi = _MultiFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(path, validation_problems(exc, data)) from None
    return PipelineConfig(
        path=path,
        database=multi.database,
        os_configuration=multi.os_configuration,
        sources=_named_sources(path, multi.sources),
        dbt_project=_folder(path, multi.dbt_project),
        executor=multi.executor,
        dask=multi.dask,
    )


def _folder(config_path: Path, given: str | None) -> Path | None:
    """A folder named in the config, resolved against the config file's folder."""
    if given is None:
        return None
    folder = Path(os.path.expanduser(given))
    return folder if folder.is_absolute() else (config_path.parent / folder).resolve()


_NAMING = frozenset({"name", "table_name"})
_SOURCE_KEYS = {"table_name", "if_table_exists", "primary_key", "merge", "incremental"}


def _named_sources(
    path: Path, entries: dict[str, _SourceEntry] | list[_SourceEntry]
) -> dict[str, SourceConfig]:
    if isinstance(entries, dict):
        pairs = list(entries.items())
    else:
        pairs = []
        for i, entry in enumerate(entries):
            name = entry.name or entry.table_name
            if not name:
                raise ConfigError(path, [f"sources[{i}]: give it a name or a table_name"])
            pairs.append((name, entry))
    if not pairs:
        raise ConfigError(path, ["sources: the config lists no source"])
    out: dict[str, SourceConfig] = {}
    for name, entry in pairs:
        if name in out:
            raise ConfigError(path, [f"sources: {name!r} appears twice"])
        # The parsed sub-models themselves, not a dump: they remember which keys the file set.
        fields = {k: getattr(entry, k) for k in type(entry).model_fields if k not in _NAMING}
        out[name] = SourceConfig(name=name, table_name=entry.table_name or name, **fields)
    return out
