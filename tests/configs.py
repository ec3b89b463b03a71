"""The config file most tests load with: one file into one table, in the original config shape.

Shared by the crash and fault tests, the hostile battery, the server-limit and report tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def write_config(
    folder: Path,
    data: Path,
    schema: str,
    url: str,
    name: str = "c",
    workers: int = 0,
    *,
    table: str = "emp",
    if_exists: str = "replace",
    extra: str = "",
    **settings: Any,
) -> Path:
    """Write `folder/<name>.yml`, loading `data` into `schema.table`, its ledger in `schema` too.

    Args:
        folder: where the file goes (a test's `tmp_path`).
        data: the input file.
        schema: the test's own schema, for the table and the run ledger.
        url: the database URL.
        name: the file's stem, so one test can write several configs.
        workers: COPY connections; 0 leaves the loader's default.
        table: the target table.
        if_exists: replace, append or fail.
        extra: more top-level YAML, as text (e.g. `validation_data: {max_bad_rows: 2}`).
        settings: more keys of `database:` (e.g. `loaded_at_column="loaded"`).

    Returns:
        The config file's path.
    """
    database: dict[str, Any] = {
        "table_name": table,
        "if_table_exists": if_exists,
        "schema": schema,
        "metadata_schema": schema,
        "url": url,
        **settings,
    }
    if workers:
        database["workers"] = workers
    document = {"path": {"input_path": str(data)}, "database": database}
    path = folder / f"{name}.yml"
    path.write_text(yaml.safe_dump(document, sort_keys=False) + extra + "\n", encoding="utf-8")
    return path
