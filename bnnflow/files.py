"""File helpers shared by the pipeline stages."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bnnflow.errors import BnnflowError

CACHE_ENV = "BNNFLOW_CACHE_DIR"


def cache_dir() -> Path:
    """Where bnnflow caches what it can recompute (decoded data sets, compiled simulator kernels):
    ``$BNNFLOW_CACHE_DIR`` or ``~/.cache/bnnflow``, never the installed package's own folder."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "bnnflow"


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's contents, read in 1 MiB blocks (inputs can be large)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def umask() -> int:
    """The process's umask (read without changing it where /proc tells it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode ``open()`` gives a new file: 0o666 less the umask."""
    return 0o666 & ~umask()


def dir_mode() -> int:
    """The mode ``mkdir`` gives a new folder: 0o777 less the umask."""
    return 0o777 & ~umask()


def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists."""
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_writable_dir(folder: Path, what: str) -> None:
    """Raise a BnnflowError unless a file can be created in the existing folder ``folder``."""
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".bnnflow-write-test-")
    except OSError as exc:
        raise BnnflowError(f"{what}: cannot write in {folder} ({_why(exc)}); give a writable location") from None
    os.close(fd)
    os.unlink(probe)


def check_output_file(path: Path | str, option: str = "output") -> None:
    """Before any work: ``path`` can be written as a file (not a folder; its folder exists or can be made
    and is writable). Raises one BnnflowError that names the path and the option."""
    path = Path(path)
    what = f"{option} {path}"
    if path.is_dir():
        raise BnnflowError(f"{what}: is a folder; give a file name")
    anc = nearest_existing(path.parent)
    if not anc.is_dir():
        raise BnnflowError(f"{what}: {anc} is a file, not a folder; give another path")
    check_writable_dir(anc, what)


#: a temporary file of :func:`atomic_path`: ``.NAME.PID.RANDOM.tmp[SUFFIX]`` (mkstemp's 8 random characters)
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)\.[a-z0-9_]{8}\.tmp(?P<suffix>\.[^.]*)?")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # a process of another user
        return True
    return True


def remove_stale_temporaries(folder: Path, name: str | None = None) -> list[str]:
    """Remove the temporary files of :func:`atomic_path` in ``folder`` (of the file ``name`` only,
    when given) whose writer was killed before it could rename or remove them (SIGKILL, a power
    cut). A temporary names its writer's pid and is locked (``flock``) while written, so one is
    stale only when that pid is gone and its lock is free: a file another run is writing right now
    (also from another pid namespace, where its pid means nothing) is never touched. Returns the
    names removed."""
    removed: list[str] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = _TEMPORARY.fullmatch(entry.name)
        if m is None or (name is not None and (m["name"] != name or (m["suffix"] or "") != Path(name).suffix)):
            continue
        if _alive(int(m["pid"])):
            continue
        try:
            fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.unlink(entry.path)
            removed.append(entry.name)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to: renamed onto ``path`` when the block
    ends without error, removed otherwise, so no reader ever sees half a file.

    The temporary name ends in ``path``'s suffix, for writers that infer a
    format from it. The file gets the mode a plain ``open()`` gives (0o666
    less the umask), not ``mkstemp``'s 0o600. A path that cannot be written
    (a folder, a read-only place, a file where a folder should be) is one
    BnnflowError naming it. A temporary of ``path`` that a killed writer left
    is removed first (:func:`remove_stale_temporaries`); this one names this
    process and stays locked while the block runs, so it is never taken for
    one.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path.parent, path.name)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=f".tmp{path.suffix}")
    except OSError as exc:
        raise BnnflowError(f"{path}: cannot write there ({_why(exc)}); give another output path") from None
    try:
        with contextlib.suppress(OSError):  # a file system without locks: the pid alone tells then
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.fchmod(fd, file_mode())
        yield Path(tmp)
        if path.is_dir():
            raise BnnflowError(f"{path}: is a folder; give a file name")
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise BnnflowError(f"{path}: cannot write there ({_why(exc)}); give another output path") from None
    finally:
        os.close(fd)
        Path(tmp).unlink(missing_ok=True)


def atomic_write(path: Path | str, data: str | bytes) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)


def read_json(path: Path, problem: str, advice: str = "") -> Any:
    """The JSON in ``path``; a file that cannot be read or parsed is one BnnflowError:
    ``{path}: {problem} ({why}); {advice}``, ``why`` the cause in a few words."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        why = _why(exc)
    except UnicodeDecodeError:
        why = "not UTF-8 text"
    except RecursionError:
        why = "nested too deeply to read"
    except ValueError as exc:
        why = str(exc)[:200]
    raise BnnflowError(f"{path}: {problem} ({why})" + (f"; {advice}" if advice else ""))
