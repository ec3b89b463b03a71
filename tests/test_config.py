"""Config loading: the original shape, the multi-source shape, and errors that name key and file."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest import run_source
from ingest.config_load import load_config
from ingest.errors import ConfigError, SourceFileError

ORIGINAL = """
path:
  input_path: 'datos.parquet'

schema_config:
  column_naming: 'lower'
  date_format: true
  data_type: {'age': 'int64', 'salary': 'float64'}

validation_data:
  sample_size: 0.01

os_configuration:
  os_margin: 0.3
  n_rows_sample: 1000

database:
  table_name: 'employees'
  if_table_exists: 'replace'
"""


def write(tmp_path: Path, text: str, name: str = "config.yml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_original_shape_loads_unchanged(tmp_path: Path) -> None:
    """The original project's config.yml loads as one source named after its table."""
    config = load_config(write(tmp_path, ORIGINAL))
    source = config.source()
    assert source.name == "employees"
    assert source.table_name == "employees"
    assert source.if_table_exists == "replace"
    assert source.schema_config.data_type == {"age": "int64", "salary": "float64"}
    assert source.schema_config.column_naming == "lower"
    assert source.validation_data.sample_size == 0.01
    assert config.os_configuration.os_margin == 0.3
    assert config.database.schema_ == "raw"
    assert config.input_file(source) == tmp_path / "datos.parquet"


def test_toml_loads_the_same(tmp_path: Path) -> None:
    """A TOML file with the same keys gives the same config."""
    toml = """
[path]
input_path = "datos.parquet"
[schema_config]
data_type = { age = "int64" }
[database]
table_name = "employees"
if_table_exists = "append"
"""
    source = load_config(write(tmp_path, toml, "config.toml")).source()
    assert (source.table_name, source.if_table_exists) == ("employees", "append")
    assert source.schema_config.data_type == {"age": "int64"}


def test_multi_source_mapping_and_list(tmp_path: Path) -> None:
    """Sources may be a mapping or a list; --source picks one; the table defaults to the name."""
    mapping = load_config(
        write(
            tmp_path,
            """
database: {schema: landing}
sources:
  a: {input_path: a.csv}
  b: {input_path: b.parquet, table_name: bee, if_table_exists: replace}
""",
        )
    )
    assert mapping.source("a").table_name == "a"
    assert mapping.source("b").table_name == "bee"
    assert mapping.database.schema_ == "landing"
    listed = load_config(
        write(
            tmp_path,
            """
sources:
  - {input_path: a.csv, table_name: first}
  - {input_path: b.csv, name: second}
""",
            "list.yml",
        )
    )
    assert sorted(listed.sources) == ["first", "second"]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (ORIGINAL.replace("os_margin", "os_margn"), "os_configuration.os_margn: unknown key"),
        (ORIGINAL.replace("'replace'", "'overwrite'"), "database.if_table_exists"),
        (ORIGINAL.replace("'int64'", "'int65'"), "unknown type 'int65'"),
        (ORIGINAL.replace("sample_size: 0.01", "sample_size: 2"), "validation_data.sample_size"),
        ("sources: {}\n", "lists no source"),
        ("- just\n- a list\n", "top level must be a mapping"),
        ("path: [unclosed\n", "not valid yml"),
        (
            "path: {input_path: '${NO_SUCH_VAR_XYZ}'}\ndatabase: {table_name: t}\n",
            "NO_SUCH_VAR_XYZ is not set",
        ),
    ],
)
def test_errors_name_the_key_and_the_file(tmp_path: Path, text: str, fragment: str) -> None:
    """A wrong or unknown key is a ConfigError naming the file and the key."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert fragment in str(info.value)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A missing config file is named in the error."""
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.yml")


def test_environment_interpolation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`${VAR}` and `${VAR:-default}` expand from the environment."""
    monkeypatch.setenv("DATA_DIR", "/data")
    config = load_config(
        write(
            tmp_path,
            """
path: {input_path: '${DATA_DIR}/x.csv'}
database: {table_name: '${TABLE:-fallback}'}
""",
        )
    )
    source = config.source()
    assert source.input_path == "/data/x.csv"
    assert source.table_name == "fallback"


def test_unknown_source_is_named(tmp_path: Path) -> None:
    """--source with a wrong name lists the ones the config has."""
    config = load_config(
        write(tmp_path, "sources: {a: {input_path: a.csv}, b: {input_path: b.csv}}\n")
    )
    with pytest.raises(ConfigError, match="no source 'c'; the config has a, b"):
        config.source("c")
    with pytest.raises(ConfigError, match="pick one with --source"):
        config.source()


SOURCE = "sources:\n  a:\n    input_path: x.csv\n"


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (SOURCE + "    bogus: 1\n", "sources.a.bogus: unknown key (check its spelling)"),
        (
            SOURCE + "    if_table_exists: sometimes\n",
            "sources.a.if_table_exists: Input should be 'fail', 'append', 'replace' or"
            " 'merge', not 'sometimes'",
        ),
        ("sources:\n  a:\n    table_name: t\n", "sources.a.input_path: required, but missing"),
        (
            "sources:\n  - name: orders\n    input_path: x.csv\n    bogus: 1\n",
            "sources.orders.bogus: unknown key (check its spelling)",
        ),
        (
            "sources:\n  - input_path: x.csv\n    bogus: 1\n",
            "sources.[0].bogus: unknown key (check its spelling)",
        ),
        (
            "sources:\n  a: x.csv\n",
            "sources.a: give a mapping of settings (key: value lines), not a single value",
        ),
        (
            "sources: x.csv\n",
            "sources: give a mapping of source name to its settings (or a list of them)",
        ),
        (
            SOURCE + "    validation_data: {checks: {x: {nullable: maybe}}}\n",
            "sources.a.validation_data.checks.x.nullable: Input should be a valid boolean, "
            "unable to interpret input, not 'maybe'",
        ),
        (
            SOURCE + "    schema_config: {data_type: {x: uuid}}\n",
            "sources.a.schema_config.data_type: column 'x': type 'uuid' is not supported for "
            "loading: load it as text and cast in the staging model (`::uuid`)",
        ),
    ],
)
def test_a_source_error_is_one_line_naming_file_source_and_key(
    tmp_path: Path, text: str, line: str
) -> None:
    """A wrong key under sources: is one line: the file, the source, the key, what is wrong;
    no pydantic union tag, class name or second error about the other union member."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"invalid config {path}: {line}"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (SOURCE, "sources.a.input_path"),
        ("sources:\n  a:\n    input_path: 'no_*.csv'\n", "sources.a.input_path"),
        (ORIGINAL, "path.input_path"),
    ],
)
def test_a_missing_input_file_names_its_key_and_the_config(
    tmp_path: Path, text: str, key: str
) -> None:
    """A missing file (or a glob matching none) names the key holding the path, and the file."""
    path = write(tmp_path, text)
    with pytest.raises(SourceFileError) as info:
        run_source(load_config(path))
    assert str(info.value).endswith(f"fix: check {key} in {path}")


def test_dbt_project_resolves_against_the_config_file(tmp_path: Path) -> None:
    """`dbt_project:` is a folder relative to the config file, in either shape."""
    multi = load_config(write(tmp_path, "dbt_project: ../proj\n" + SOURCE))
    legacy = load_config(write(tmp_path, "dbt_project: proj\n" + ORIGINAL, "legacy.yml"))
    assert multi.dbt_project == tmp_path.parent / "proj"
    assert legacy.dbt_project == tmp_path / "proj"
