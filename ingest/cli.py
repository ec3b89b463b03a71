"""The `pgloadkit` console script (also `python -m ingest`): one command per job of a load.

Every command runs through `ingest.commands.session.execute`, as the invoke tasks do, so both
print, fail and exit alike. Options common to all commands (`--json`, `-q`, `-v`,
`--project-dir`) may come before the command or after it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Annotated

import typer

from ingest.commands import doctor as doctor_command
from ingest.commands import load, server
from ingest.commands.session import (
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    Command,
    Options,
    execute,
)
from ingest.runtime.memory import lean_imports

EXIT_CODES = (
    "Exit codes: 0 ok; 1 expected failure (bad input, refused load, unreachable server, a "
    "problem doctor found); 2 usage or config error; 3 drift found by `drift`; 130 interrupted."
)


class Strategy(StrEnum):
    """The loading strategies `--strategy` takes."""

    AUTO = "auto"
    EAGER = "eager"
    LAZY = "lazy"
    STREAMING = "streaming"


class ExecutorName(StrEnum):
    """Where `--executor` runs the partition tasks."""

    LOCAL = "local"
    DASK = "dask"


ExecutorOption = Annotated[
    ExecutorName | None,
    typer.Option(
        "--executor", help="Run the tasks here (local) or on Dask (the config's dask: settings).",
        show_default=False,
    ),
]  # fmt: skip

app = typer.Typer(
    name="pgloadkit",
    help="Load big CSV and Parquet files into PostgreSQL, then build marts with dbt.",
    epilog=EXIT_CODES,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
db_app = typer.Typer(
    help="Manage the project's embedded PostgreSQL.", epilog=EXIT_CODES, no_args_is_help=True
)
app.add_typer(db_app, name="db")

Json = Annotated[
    bool, typer.Option("--json", help="Print one JSON object on stdout (logs go to stderr).")
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Only results and errors.")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="More detail, debug logs.")]
ProjectDir = Annotated[
    Path | None,
    typer.Option(
        "--project-dir",
        help="The project root (holding config.yml, dbt_project/); default: found from the "
        "config file's folder or the working directory up. Its .pipeline/ holds the state.",
        show_default=False,
    ),
]
Config = Annotated[
    str | None,
    typer.Option(
        "--config", "-c", help="YAML or TOML config file (default: the project's config.yml).",
        show_default=False,
    ),
]  # fmt: skip
Source = Annotated[
    str | None, typer.Option("--source", "-s", help="Which source, when the config has several.")
]
MemoryLimit = Annotated[
    str | None,
    typer.Option(
        "--memory-limit", help="Memory the run may use, e.g. 400MB or 2GiB "
        "(or PIPELINE_MEMORY_LIMIT).", show_default=False,
    ),
]  # fmt: skip


@app.callback()
def _common(
    ctx: typer.Context,
    json_out: Json = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
    project_dir: ProjectDir = None,
) -> None:
    """Load big CSV and Parquet files into PostgreSQL, then build marts with dbt."""
    ctx.obj = Options(json=json_out, quiet=quiet, verbose=verbose, project_dir=project_dir)


def run_command(
    ctx: typer.Context,
    command: Command,
    *,
    json_out: bool = False,
    quiet: bool = False,
    verbose: bool = False,
    project_dir: Path | None = None,
    config: str | None = None,
) -> None:
    """Run a command with the options given before and after its name; exit with its code."""
    outer = ctx.find_object(Options) or Options()
    options = Options(
        json=json_out or outer.json,
        quiet=quiet or outer.quiet,
        verbose=verbose or outer.verbose,
        project_dir=project_dir or outer.project_dir,
        config=config,
    )
    raise typer.Exit(execute(options, command))


@app.command("ingest", epilog=EXIT_CODES)
def ingest_(
    ctx: typer.Context,
    config: Config = None,
    source: Source = None,
    memory_limit: MemoryLimit = None,
    strategy: Annotated[
        Strategy | None,
        typer.Option(help="Force eager, lazy or streaming.", show_default=False),
    ] = None,
    force: Annotated[
        bool, typer.Option(help="Load the file again even if the ledger has it.")
    ] = False,
    restart: Annotated[
        bool,
        typer.Option(help="Drop what a killed load of the source staged; start it over."),
    ] = False,
    executor: ExecutorOption = None,
    json_out: Json = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
    project_dir: ProjectDir = None,
) -> None:
    """Load a source's file into PostgreSQL (raw schema), atomically; resume a killed load."""
    command = partial(
        load.ingest_source,
        source=source,
        memory_limit=memory_limit,
        strategy=strategy.value if strategy is not None else None,
        force=force,
        restart=restart,
        executor=executor.value if executor is not None else None,
    )
    run_command(ctx, command, json_out=json_out, quiet=quiet, verbose=verbose,
         project_dir=project_dir, config=config)  # fmt: skip


@app.command("plan", epilog=EXIT_CODES)
def plan_(
    ctx: typer.Context,
    config: Config = None,
    source: Source = None,
    memory_limit: MemoryLimit = None,
    executor: ExecutorOption = None,
    json_out: Json = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
    project_dir: ProjectDir = None,
) -> None:
    """Explain how a source would load (estimate, budget, strategy, batch) without loading."""
    chosen = executor.value if executor is not None else None
    command = partial(load.plan, source=source, memory_limit=memory_limit, executor=chosen)
    run_command(ctx, command, json_out=json_out, quiet=quiet, verbose=verbose,
         project_dir=project_dir, config=config)  # fmt: skip


@app.command("build", epilog=EXIT_CODES)
def build_(
    ctx: typer.Context,
    config: Config = None,
    json_out: Json = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
    project_dir: ProjectDir = None,
    select: Annotated[
        list[str] | None,
        typer.Option("--select", "-s", help="dbt selection for every step, e.g. source:orders+."),
    ] = None,
) -> None:
    """Run dbt: source freshness and build on PostgreSQL (staging views), then DuckDB (marts)."""
    command = partial(load.build, select=tuple(select or ()))
    run_command(ctx, command, json_out=json_out, quiet=quiet, verbose=verbose,
         project_dir=project_dir, config=config)  # fmt: skip


@app.command("drift", epilog=EXIT_CODES)
def drift_(
    ctx: typer.Context,
    config: Config = None,
    source: Source = None,
    json_out: Json = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
    project_dir: ProjectDir = None,
) -> None:
    """Show how each file of a source differs from the last loaded schema; exit 3 on drift."""
    run_command(ctx, partial(load.drift, source=source), json_out=json_out, quiet=quiet,
         verbose=verbose, project_dir=project_dir, config=config)  # fmt: skip


@app.command("runs", epilog=EXIT_CODES)
def runs_(
    ctx: typer.Context,
    config: Config = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many runs.")] = 20,
    json_out: Json = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
    project_dir: ProjectDir = None,
) -> None:
    """Show the most recent runs from the ledger (status, rows, time, memory, strategy)."""
    run_command(ctx, partial(load.runs, limit=limit), json_out=json_out, quiet=quiet,
         verbose=verbose, project_dir=project_dir, config=config)  # fmt: skip


@app.command("query", epilog=EXIT_CODES)
def query_(
    ctx: typer.Context,
    sql: Annotated[str, typer.Argument(help="SQL to run on the DuckDB marts.")],
    csv: Annotated[bool, typer.Option("--csv", help="Print CSV.")] = False,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print one JSON object: columns and rows.")
    ] = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
    project_dir: ProjectDir = None,
) -> None:
    """Query the DuckDB marts file; a refused statement is one line naming the marts."""
    fmt: load.QueryFormat = "json" if json_out else "csv" if csv else "table"
    run_command(ctx, partial(load.query, sql=sql, fmt=fmt), json_out=json_out, quiet=quiet,
         verbose=verbose, project_dir=project_dir)  # fmt: skip


@app.command("doctor", epilog=EXIT_CODES)
def doctor_(
    ctx: typer.Context,
    config: Config = None,
    json_out: Json = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
    project_dir: ProjectDir = None,
) -> None:
    """Check the database, the embedded server, dbt, DuckDB and memory; exit 1 on a problem."""
    run_command(ctx, doctor_command.doctor, json_out=json_out, quiet=quiet, verbose=verbose,
         project_dir=project_dir, config=config)  # fmt: skip


@app.command("version", epilog=EXIT_CODES)
def version_(ctx: typer.Context, json_out: Json = False) -> None:
    """Print pgloadkit's version and those of the tools it runs on."""
    run_command(ctx, server.version, json_out=json_out)


@db_app.command("up", epilog=EXIT_CODES)
def db_up(
    ctx: typer.Context,
    config: Config = None,
    json_out: Json = False,
    quiet: Quiet = False,
    project_dir: ProjectDir = None,
) -> None:
    """Start the embedded PostgreSQL (data under the project's .pipeline/postgres)."""
    run_command(ctx, server.db_up, json_out=json_out, quiet=quiet, project_dir=project_dir,
                config=config)  # fmt: skip


@db_app.command("down", epilog=EXIT_CODES)
def db_down(
    ctx: typer.Context,
    config: Config = None,
    json_out: Json = False,
    quiet: Quiet = False,
    project_dir: ProjectDir = None,
) -> None:
    """Stop the embedded PostgreSQL."""
    run_command(ctx, server.db_down, json_out=json_out, quiet=quiet, project_dir=project_dir,
                config=config)  # fmt: skip


@db_app.command("status", epilog=EXIT_CODES)
def db_status(
    ctx: typer.Context,
    config: Config = None,
    json_out: Json = False,
    project_dir: ProjectDir = None,
) -> None:
    """Say whether the embedded PostgreSQL runs, and where."""
    run_command(ctx, server.db_status, json_out=json_out, project_dir=project_dir, config=config)


@db_app.command("url", epilog=EXIT_CODES)
def db_url(
    ctx: typer.Context,
    config: Config = None,
    show_password: Annotated[bool, typer.Option(help="Print the password instead of ***.")] = False,
    json_out: Json = False,
    project_dir: ProjectDir = None,
) -> None:
    """Print the URL of the database commands use (starting the embedded server if needed)."""
    run_command(ctx, partial(server.db_url, show_password=show_password), json_out=json_out,
         project_dir=project_dir, config=config)  # fmt: skip


# Commands kept in modules of their own register here: each module has `register(app)`, which
# adds its commands with `@app.command()` and runs them through `run_command` like the ones
# above.
EXTENSIONS: tuple[str, ...] = ("ingest.commands.report",)


def _register_extensions() -> None:
    """Import each extension module once and let it add its commands."""
    import importlib

    known = {info.name for info in app.registered_commands}
    for name in EXTENSIONS:
        module = importlib.import_module(name)
        if getattr(module, "COMMAND", None) not in known:
            module.register(app)


def _usage_error(exc: typer.TyperException, args: list[str]) -> int:
    """One `error:` line naming the command's --help (no arguments at all: the help itself)."""
    code = int(getattr(exc, "exit_code", EXIT_USAGE))
    if type(exc).__name__ == "NoArgsIsHelpError":
        getattr(exc, "show", print)()
        return code
    message = exc.format_message().replace("Value error, ", "")
    context = getattr(exc, "ctx", None)
    where = getattr(context, "command_path", "pgloadkit")
    if "--json" in args:
        failed = {"status": "failed", "error": message, "error_type": type(exc).__name__}
        print(json.dumps({**failed, "exit_code": code}), flush=True)
    print(f"error: {message} (see `{where} --help`)", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the console script; return its exit code (usage errors too, never raising)."""
    args = list(sys.argv[1:] if argv is None else argv)
    lean_imports()  # a program of this project: pandas stays out of its loads
    _register_extensions()
    try:
        code = app(args=args, prog_name="pgloadkit", standalone_mode=False)
    except typer.TyperException as exc:  # a usage error: typer (its own click) found it
        return _usage_error(exc, args)
    except typer.Abort:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return code if isinstance(code, int) else 0
