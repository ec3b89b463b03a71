"""Which dbt project a load writes into, and which of its sources a build can reach now.

Loads write staging folders only into a project the config belongs to, so an ad-hoc config
never leaves folders in the repository's project. `invoke build` leaves out the sources whose
table is not in the current database (a folder from a load into another server), naming them,
instead of letting dbt fail on `relation ... does not exist`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import yaml

from ingest.config import PipelineConfig
from ingest.dbt.schema_yaml import by_name, plain, read
from ingest.pg.relations import missing_relations
from ingest.runtime.paths import project_root

PROJECT_ENV: Final = "PIPELINE_DBT_PROJECT"
# `{{ var('raw_schema', 'raw') }}` or `{{ env_var('DBT_PG_SCHEMA', 'analytics') }}`, as generated.
_SCHEMA_VAR: Final = re.compile(
    r"\{\{\s*(var|env_var)\(\s*'([A-Za-z_][A-Za-z0-9_]*)'\s*(?:,\s*'((?:[^'\\]|\\.)*)'\s*)?\)\s*\}\}"
)


def staging_project(config: PipelineConfig) -> Path | None:
    """The dbt project a load of `config` writes its staging sources into, or None.

    `$PIPELINE_DBT_PROJECT` when set; else the config's `dbt_project:`; else the checkout's
    `dbt_project/` when the config file sits in the checkout's top folder (`config.yml`).
    """
    configured = os.environ.get(PROJECT_ENV)
    if configured:
        return Path(configured)
    if config.dbt_project is not None:
        return config.dbt_project
    root = project_root()
    if config.path.parent == root and (root / "dbt_project" / "dbt_project.yml").is_file():
        return root / "dbt_project"
    return None


@dataclass(frozen=True)
class DeclaredTable:
    """A table a dbt source declares: the source, the table's dbt name, where it is."""

    source: str
    table: str
    schema: str
    identifier: str

    @property
    def selector(self) -> str:
        """The dbt selector of this table and everything built from it."""
        return f"source:{self.source}.{self.table}+"


def resolve_schema(text: str, values: Mapping[str, str]) -> str | None:
    """A source's schema: literal, or a generated `var()`/`env_var()` call resolved from `values`
    (else its default); None for any other Jinja, which only dbt can render."""
    if "{" not in text:
        return text
    match = _SCHEMA_VAR.fullmatch(text.strip())
    if match is None:
        return None
    name, default = match.group(2), match.group(3)
    value = values.get(name, default.replace("\\'", "'") if default is not None else None)
    return value


def declared_tables(
    project_dir: Path, values: Mapping[str, str], *, database: str | None
) -> list[DeclaredTable]:
    """The tables the project's sources declare in `database` (None: the target's own).

    Args:
        project_dir: The dbt project folder.
        values: `var()` and `env_var()` values by name, e.g. `raw_schema`, `DBT_PG_SCHEMA`.
        database: Only sources with this `database:` (None: sources without one).
    """
    found: list[DeclaredTable] = []
    for path in sorted((project_dir / "models").rglob("*.yml")):
        try:
            document = read(path)[1]
        except (OSError, yaml.YAMLError):
            continue  # dbt names a file it cannot parse better than a guess here would
        for source in by_name(document.get("sources")).values():
            if source.get("database") != database:
                continue
            schema = resolve_schema(str(source.get("schema", source["name"])), values)
            if schema is None:
                continue
            for table in by_name(source.get("tables")).values():
                identifier = plain(str(table.get("identifier", table["name"])))
                found.append(
                    DeclaredTable(str(source["name"]), str(table["name"]), schema, identifier)
                )
    return found


def unreachable(
    project_dir: Path, url: str, values: Mapping[str, str], *, database: str | None
) -> dict[str, list[DeclaredTable]]:
    """The declared tables (by source) that the database at `url` has no table or view for."""
    tables = declared_tables(project_dir, values, database=database)
    missing = missing_relations(url, sorted({(t.schema, t.identifier) for t in tables}))
    out: dict[str, list[DeclaredTable]] = {}
    for table in tables:
        if (table.schema, table.identifier) in missing:
            out.setdefault(table.source, []).append(table)
    return out


def exclusion_note(source: str, tables: list[DeclaredTable], target: str) -> str:
    """One line naming a source left out of a build, and what would bring it back."""
    names = ", ".join(f'"{t.schema}"."{t.identifier}"' for t in tables)
    return (
        f"not building source {source} on {target}: {names} is not in this database "
        f"(load it with invoke ingest, or delete its folder under models/)"
    )


def selection(
    target: str,
    project_dir: Path,
    url: str,
    values: Mapping[str, str],
    select: Sequence[str],
    log: Callable[[str], None],
) -> list[str]:
    """`--select` as given, and `--exclude` for each source whose table is not in the database.

    Called just before each step: the DuckDB target's sources are the staging views that the
    PostgreSQL step builds, so they are looked up only once that step has run.
    """
    missing = unreachable(project_dir, url, values, database=None if target == "pg" else "pg")
    for source, tables in missing.items():
        log(exclusion_note(source, tables, target))
    excluded = [table.selector for tables in missing.values() for table in tables]
    chosen = ["--select", *select] if select else []
    return [*chosen, *(["--exclude", *excluded] if excluded else [])]
