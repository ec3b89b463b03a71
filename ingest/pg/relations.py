"""Which tables and views exist: one catalogue lookup for a list of names."""

from __future__ import annotations

from collections.abc import Sequence

from ingest.pg.db import connect


def missing_relations(url: str, names: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
    """The `(schema, name)` pairs of `names` that no table or view in the database has.

    Raises:
        DatabaseUnavailable: the server does not answer.
    """
    if not names:
        return set()
    schemas, tables = [s for s, _ in names], [t for _, t in names]
    with connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "select s, t from unnest(%s::text[], %s::text[]) as n(s, t) "
            "where not exists (select from pg_catalog.pg_class c "
            "join pg_catalog.pg_namespace ns on ns.oid = c.relnamespace "
            "where ns.nspname = n.s and c.relname = n.t)",
            (schemas, tables),
        ).fetchall()
    return {(str(schema), str(table)) for schema, table in rows}
