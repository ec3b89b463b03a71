"""A config file before validation (`${VAR}` expansion), and its errors in the file's terms."""

from __future__ import annotations

import os
import re
from typing import Any

from pydantic import ValidationError

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate(value: Any, where: str, problems: list[str]) -> Any:
    """Expand `${VAR}` and `${VAR:-default}` in every string of the parsed file."""
    if isinstance(value, dict):
        return {
            k: interpolate(v, f"{where}.{k}" if where else str(k), problems)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [interpolate(v, f"{where}[{i}]", problems) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def expand(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        problems.append(f"{where}: environment variable {name} is not set")
        return ""

    return _VAR.sub(expand, value)


def validation_problems(error: ValidationError, data: dict[str, Any]) -> list[str]:
    """One line per problem, named by its key path as the file spells it (a list entry by its
    name), without pydantic's internals: the union member tags and class names."""
    sources = data.get("sources")
    if "sources" in data and not isinstance(sources, dict | list):
        return ["sources: give a mapping of source name to its settings (or a list of them)"]
    # `sources` is a mapping or a list; pydantic reports both union members' failures, each
    # under a tag such as `dict[str,_SourceEntry]`: keep the member the file used, untagged.
    used = "dict" if isinstance(sources, dict) else "list"
    out: list[str] = []
    for item in error.errors():
        loc = list(item["loc"])
        if loc[:1] == ["sources"] and len(loc) > 1 and str(loc[1]).endswith("_SourceEntry]"):
            if not str(loc[1]).startswith(used):
                continue
            del loc[1]
        if loc[:1] == ["sources"] and len(loc) > 1 and isinstance(loc[1], int):
            loc[1] = _entry_name(sources, loc[1])
        key = ".".join(str(part) for part in loc) or "(top level)"
        line = f"{key}: {_message(item)}"
        if line not in out:
            out.append(line)
    return out


def _entry_name(sources: Any, index: int) -> str:
    """A list entry as a user finds it: by its name or table_name, else by position."""
    entry = sources[index] if isinstance(sources, list) and index < len(sources) else None
    name = entry.get("name") or entry.get("table_name") if isinstance(entry, dict) else None
    return str(name) if name else f"[{index}]"


def _message(item: Any) -> str:
    """pydantic's message for one error, said in the config's terms."""
    kind = item["type"]
    if kind == "extra_forbidden":
        return "unknown key (check its spelling)"
    if kind == "missing":
        return "required, but missing"
    if kind in ("model_type", "dict_type"):
        return "give a mapping of settings (key: value lines), not a single value"
    message = str(item["msg"]).removeprefix("Value error, ")
    if kind in ("literal_error", "bool_parsing", "int_parsing", "float_parsing", "enum"):
        message = f"{message}, not {item['input']!r}"
    return message
