"""File helpers shared by the pipeline stages."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

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


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to: renamed onto ``path`` when the block
    ends without error, removed otherwise, so no reader ever sees half a file.

    The temporary name ends in ``path``'s suffix, for writers that infer a
    format from it. The file gets the mode a plain ``open()`` gives (0o666
    less the umask), not ``mkstemp``'s 0o600. A path that cannot be written
    (a folder, a read-only place, a file where a folder should be) is one
    BnnflowError naming it.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    except OSError as exc:
        raise BnnflowError(f"{path}: cannot write there ({_why(exc)}); give another output path") from None
    try:
        os.fchmod(fd, file_mode())
    finally:
        os.close(fd)
    try:
        yield Path(tmp)
        if path.is_dir():
            raise BnnflowError(f"{path}: is a folder; give a file name")
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise BnnflowError(f"{path}: cannot write there ({_why(exc)}); give another output path") from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def atomic_write(path: Path | str, data: str | bytes) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
