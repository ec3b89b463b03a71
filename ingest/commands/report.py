"""`report`: a run of the ledger as one self-contained HTML page.

It registers itself through `ingest.cli.EXTENSIONS` (`register(app)`), the way commands kept
in their own modules join the console script.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

import ingest
from ingest.cli import Config, Json, ProjectDir, Quiet, Verbose, run_command
from ingest.commands.session import EXIT_OK, Session
from ingest.errors import UsageError

COMMAND = "report"  # the name it registers, so registering twice is skipped


def report(
    s: Session, run_id: str | None = None, latest: bool = False, out: str | None = None
) -> int:
    """Write a run's report (default: the latest run's) and print the file's path."""
    if run_id and latest:
        raise UsageError("give a run id or --latest, not both")
    config = s.load_config()
    url = ingest.resolve_url(config.database.url, s.note)
    path = ingest.write_run_report(
        url, config.database.metadata_schema, run_id, Path(out) if out else None
    )
    written = path.resolve()

    def human() -> None:
        print(written, flush=True)
        s.note(f"open it in a browser: {written.as_uri()}")

    s.result({"path": str(written)}, human)
    return EXIT_OK


def register(app: typer.Typer) -> None:
    """Add `report` to the console script."""

    @app.command(COMMAND, epilog=_epilog(app))
    def report_(
        ctx: typer.Context,
        run_id: Annotated[
            str | None,
            typer.Argument(
                help="The run, or the start of its id as `runs` shows it.", show_default=False
            ),
        ] = None,
        latest: Annotated[
            bool, typer.Option("--latest", help="The latest run (the default with no id).")
        ] = False,
        out: Annotated[
            str | None,
            typer.Option(
                "--out",
                "-o",
                help="The HTML file to write (default: .pipeline/reports/run-<id>.html).",
                show_default=False,
            ),
        ] = None,
        config: Config = None,
        json_out: Json = False,
        quiet: Quiet = False,
        verbose: Verbose = False,
        project_dir: ProjectDir = None,
    ) -> None:
        """Write a run's report as one HTML page (rows/s, memory, phases, rejects, drift)."""
        command = lambda s: report(s, run_id, latest, out)  # noqa: E731
        run_command(ctx, command, json_out=json_out, quiet=quiet, verbose=verbose,
                    project_dir=project_dir, config=config)  # fmt: skip


def _epilog(app: typer.Typer) -> str | None:
    """The exit codes the other commands list."""
    return app.info.epilog if isinstance(app.info.epilog, str) else None
