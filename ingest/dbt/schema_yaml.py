"""Names and YAML as dbt and PostgreSQL read them: casing, quoting, Jinja-safe text, layout."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import yaml

NAMINGS: Final = ("lower", "upper", "capitalize")
# PostgreSQL keywords that are not "unreserved" (pg_get_keywords() of 15, plus 16's and 17's).
KEYWORDS: Final = frozenset(
    """all analyse analyze and any array as asc asymmetric authorization between bigint binary bit
    boolean both case cast char character check coalesce collate collation column concurrently
    constraint create cross current_catalog current_date current_role current_schema current_time
    current_timestamp current_user dec decimal default deferrable desc distinct do else end except
    exists extract false fetch float for foreign freeze from full grant greatest group grouping
    having ilike in initially inner inout int integer intersect interval into is isnull join json
    json_array json_arrayagg json_exists json_object json_objectagg json_query json_scalar
    json_serialize json_table json_value lateral leading least left like limit localtime
    localtimestamp merge_action national natural nchar none normalize not notnull null nullif
    numeric offset on only or order out outer overlaps overlay placing position precision primary
    real references returning right row select session_user setof similar smallint some substring
    symmetric system_user table tablesample then time timestamp to trailing treat trim true union
    unique user using values varchar variadic verbose when where window with xmlattributes
    xmlconcat xmlelement xmlexists xmlforest xmlnamespaces xmlparse xmlpi xmlroot xmlserialize
    xmltable""".split()
)


def cased_name(name: str, naming: str) -> str:
    """The staging name of raw column `name`, as the `cased_name` dbt macro makes it."""
    if naming not in NAMINGS:
        raise ValueError(f"column_naming must be one of {NAMINGS}, not {naming!r}")
    snake = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    snake = re.sub(r"[^0-9A-Za-z_]+", "_", snake)
    snake = re.sub(r"_{2,}", "_", snake).rstrip("_").lower()
    return {"lower": snake, "upper": snake.upper(), "capitalize": snake.capitalize()}[naming]


def needs_quote(name: str) -> bool:
    """True when PostgreSQL keeps `name` as written only inside double quotes."""
    return not re.fullmatch(r"[a-z_][a-z0-9_$]*", name) or name in KEYWORDS


def slug(name: str) -> str:
    """A dbt resource and file name for `name`: lower snake case, never empty."""
    text = re.sub(r"[^0-9a-z_]+", "_", name.lower()).strip("_")
    return text if text and not text[0].isdigit() else f"t_{text}"


def jinja_safe(text: str) -> str:
    """`text` written so that dbt, which renders YAML values as Jinja, reads it back verbatim."""
    if not any(mark in text for mark in ("{{", "{%", "{#")):
        return text
    if "endraw" not in text:
        return "{% raw %}" + text + "{% endraw %}"
    return "{{ '" + text.replace("\\", "\\\\").replace("'", "\\'") + "' }}"


def plain(text: str) -> str:
    """`text` without the raw block `jinja_safe` may have put around it."""
    if text.startswith("{% raw %}") and text.endswith("{% endraw %}"):
        return text[len("{% raw %}") : -len("{% endraw %}")]
    return text


def raw_column(name: str) -> tuple[str, bool]:
    """The YAML `name` and `quote` of a raw column; dbt's own quoting does not escape `"`."""
    if '"' in name:
        return jinja_safe('"' + name.replace('"', '""') + '"'), False
    return jinja_safe(name), needs_quote(name)


# Keys whose value is written on one line when it holds only scalars: `{count: 24, period: hour}`.
FLOW_KEYS: Final = frozenset(
    {"values", "warn_after", "error_after", "contract", "meta", "quoting", "combination_of_columns"}
)


class Quoted(str):
    """A string written in double quotes, as dbt's docs write Jinja: `"{{ var('x') }}"`."""

    __slots__ = ()


class _Dumper(yaml.SafeDumper):
    """Block YAML with indented lists, laid out like the hand-written files."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    """Several lines as a `|` block, one line ending in a newline as `>`, else PyYAML's choice."""
    style = "|" if "\n" in value.rstrip("\n") else ">" if value.endswith("\n") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)
_Dumper.add_representer(
    Quoted, lambda d, v: d.represent_scalar("tag:yaml.org,2002:str", str(v), style='"')
)


class _Flow(dict[str, Any]):
    pass


class _FlowList(list[Any]):
    pass


_Dumper.add_representer(
    _Flow, lambda d, v: d.represent_mapping("tag:yaml.org,2002:map", v, flow_style=True)
)
_Dumper.add_representer(
    _FlowList, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True)
)


def _scalar(value: object) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _styled(value: object, key: str = "") -> object:
    """`value` with the small mappings and lists of `FLOW_KEYS` marked to be written on one line."""
    if isinstance(value, dict):
        if key in FLOW_KEYS and all(_scalar(v) for v in value.values()):
            return _Flow(value)
        return {k: _styled(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        if key in FLOW_KEYS and all(_scalar(v) for v in value):
            return _FlowList(value)
        return [_styled(v) for v in value]
    return value


def dump(header: str, document: dict[str, Any]) -> str:
    """`header`, then `document` as YAML with `version: 2` on top and a blank line after it."""
    body = _styled({k: v for k, v in document.items() if k != "version"})
    text = yaml.dump(body, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    return f"{header}\nversion: 2\n\n{text}"


def read(path: Path) -> tuple[str, dict[str, Any]]:
    """The file's text and YAML mapping; both empty when there is no file."""
    if not path.is_file():
        return "", {}
    text = path.read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    return text, data if isinstance(data, dict) else {}


def write(path: Path, text: str) -> None:
    """Replace `path` in one rename, so a dbt run never reads half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def by_name(entries: object, key: Callable[[str], str] = str) -> dict[str, dict[str, Any]]:
    """The mappings of a YAML list by their `name` (passed through `key`)."""
    if not isinstance(entries, list):
        return {}
    return {key(str(e["name"])): e for e in entries if isinstance(e, dict) and "name" in e}
