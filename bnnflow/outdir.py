"""Output folders: nothing lost, nothing silent.

Every command that writes a folder goes through this module:

* **ownership**: a folder is replaced only if it is ours, i.e. empty or
  holding a ``manifest.json`` whose ``"format"`` is ``bnnflow-build`` (what
  ``bnnflow build`` writes); anything else, e.g. a project with its own
  ``manifest.json``, is refused with one line;
* **a lock**: ``.NAME.lock`` beside the folder, held (``fcntl.flock``) for
  the whole run, so a second run into the same folder stops at once with
  one line instead of taking over the first one's temporary folder; folders
  the lock had to create (NAME's parents) go again when the run leaves them
  empty, so a failed run leaves nothing behind;
* **crash-safe replace** (:func:`replacing`): the new contents are written
  into a hidden ``.NAME.building-*`` folder beside NAME, NAME being a link
  to it meanwhile (so paths recorded during the run name NAME); the previous
  folder waits in ``.NAME.old-*``. On success the new folder takes NAME's
  place, on any exception, Ctrl-C, SIGTERM or SIGHUP the previous folder is
  put back (:func:`signals_raise` turns those signals into an exception);
* **stale temporaries**: when the lock is taken, nobody else is running, so
  what a killed run left (``.NAME.building-*``, ``.NAME.old-*``, NAME
  linking to a work folder) is cleaned up and a previous folder hidden by a
  killed run is put back first; in a folder written file by file
  (:func:`writing`) the temporary files of killed atomic writes go
  (:func:`bnnflow.files.remove_stale_temporaries`).

The manifest is read by :func:`read_manifest` only: one that is there but
cannot be read (no permission, a folder, a FIFO a read would block on, not
JSON) is one line naming it, never a traceback, a hang or "not ours".
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import signal
import stat
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bnnflow.errors import BnnflowError
from bnnflow.files import _why, check_writable_dir, dir_mode, nearest_existing, remove_stale_temporaries

BUILD_FORMAT = "bnnflow-build"
MANIFEST = "manifest.json"


class Interrupted(KeyboardInterrupt):
    """A run stopped by a signal (SIGINT, SIGTERM, SIGHUP); ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


# ---------------------------------------------------------------- names
def building_prefix(out: Path) -> str:
    return f".{out.name}.building-"


def old_prefix(out: Path) -> str:
    return f".{out.name}.old-"


def lock_path(out: Path) -> Path:
    return out.parent / f".{out.name}.lock"


def is_work_link(out: Path) -> bool:
    """``out`` is a link to one of our work folders (a run is going on, or one was killed)."""
    try:
        return out.is_symlink() and Path(os.readlink(out)).name.startswith(building_prefix(out))
    except OSError:
        return False


# ---------------------------------------------------------------- checks
#: what to do about a manifest that cannot be read, when the caller has nothing more specific to say
MANIFEST_ADVICE = (
    "it is the record `bnnflow build` writes: fix it, or remove the folder and build again "
    "(build does not replace a folder it cannot tell is a build)"
)


def read_manifest(folder: Path, advice: str = MANIFEST_ADVICE) -> Any:
    """``folder/manifest.json`` parsed; None when there is none.

    One that is there but cannot be read is a BnnflowError naming it, what is
    wrong and ``advice``: without read permission, a folder, a FIFO or device
    (checked before opening it: reading a FIFO blocks until someone writes),
    not UTF-8 text, not JSON or nested too deeply to read.
    """
    path = folder / MANIFEST
    try:
        st = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise BnnflowError(f"{path}: a link to {os.readlink(path)}, which does not exist; {advice}") from None
        return None
    except OSError as exc:
        raise BnnflowError(f"{path}: cannot read it ({_why(exc)}); {advice}") from None
    if stat.S_ISDIR(st.st_mode):
        raise BnnflowError(f"{path}: is a folder, not a manifest file; {advice}")
    if not stat.S_ISREG(st.st_mode):
        raise BnnflowError(f"{path}: is not a regular file (a FIFO or a device), so it is not read; {advice}")
    try:
        text = path.read_text(encoding="utf-8")
    except PermissionError as exc:  # the file is fine, only this user may not read it
        raise BnnflowError(
            f"{path}: cannot read it ({_why(exc)}); make it readable to this user and run again"
        ) from None
    except OSError as exc:
        raise BnnflowError(f"{path}: cannot read it ({_why(exc)}); {advice}") from None
    except UnicodeDecodeError:
        raise BnnflowError(f"{path}: not valid JSON (not UTF-8 text); {advice}") from None
    try:
        return json.loads(text)
    except RecursionError:
        raise BnnflowError(f"{path}: not valid JSON (nested too deeply to read); {advice}") from None
    except ValueError as exc:
        raise BnnflowError(f"{path}: not valid JSON ({exc}); {advice}") from None


def manifest_format(folder: Path, advice: str = MANIFEST_ADVICE) -> Any:
    """The ``format`` entry of ``folder/manifest.json`` (None when there is no manifest or it is not an
    object); a manifest that cannot be read is a BnnflowError (:func:`read_manifest`)."""
    m = read_manifest(folder, advice)
    return m.get("format") if isinstance(m, dict) else None


def is_build(folder: Path) -> bool:
    """``folder`` is a finished bnnflow build (a real folder whose manifest says so)."""
    return folder.is_dir() and not folder.is_symlink() and manifest_format(folder) == BUILD_FORMAT


def check_owned(out: Path, option: str = "--out") -> None:
    """Raise unless ``out`` may be replaced: absent, an empty folder or a bnnflow build folder."""
    if out.is_symlink():
        raise BnnflowError(f"{option} {out}: is a symbolic link; give another {option}")
    if not out.exists():
        return
    if not out.is_dir():
        raise BnnflowError(f"{option} {out}: is a file, not a bnnflow build folder; give another {option}")
    if not any(out.iterdir()):
        return
    fmt = manifest_format(out, f"{out} is left as it is: give another {option} or remove it")
    if fmt != BUILD_FORMAT:
        why = (
            "it has no manifest.json"
            if not (out / MANIFEST).exists()
            else f'its manifest.json has no "format": "{BUILD_FORMAT}" entry'
            if fmt is None
            else f"its manifest.json is of format {fmt!r}, not {BUILD_FORMAT!r}"
        )
        raise BnnflowError(
            f"{option} {out}: exists and is not a bnnflow build folder ({why}); nothing was "
            f"changed: give another {option} or remove it"
        )


def check_output_dir(out: Path | str, option: str = "--out", beside: bool = False) -> None:
    """Before any work: ``out`` can be a folder here (not a file; writable: ``out`` itself, or with
    ``beside`` the folder it is in, where :func:`replacing` works)."""
    out = Path(out)
    what = f"{option} {out}"
    if out.exists() and not out.is_dir():
        raise BnnflowError(f"{what}: is a file; give a folder")
    anc = out if out.is_dir() and not beside else nearest_existing(out.parent)
    if not anc.is_dir():
        raise BnnflowError(f"{what}: {anc} is a file, not a folder; give another path")
    check_writable_dir(anc, what)


# ---------------------------------------------------------------- lock
class Lock:
    """``fcntl.flock`` on ``.NAME.lock`` beside ``out``; refuses at once when another run holds it.

    The lock file is removed on release (while still locked; a run that
    opened the old file sees that it was replaced and opens the new one), and
    so are the folders above ``out`` that :meth:`acquire` had to create, when
    the run left them empty: a finished run leaves nothing beside its folder,
    a failed one nothing at all.
    """

    def __init__(self, out: Path, option: str = "--out") -> None:
        self.out = out
        self.path = lock_path(out)
        self.option = option
        self.fd: int | None = None
        self.created: list[Path] = []  # deepest first

    def _make_parent(self) -> None:
        missing = []
        p = self.out.parent
        while not p.exists() and not p.is_symlink() and p != p.parent:
            missing.append(p)
            p = p.parent
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BnnflowError(
                f"{self.option} {self.out}: cannot create its folder ({_why(exc)}); give another {self.option}"
            ) from None
        self.created += [d for d in missing if d not in self.created]

    def acquire(self) -> None:
        self._make_parent()
        tries = 0
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except FileNotFoundError:
                tries += 1  # a run that just finished removed the folder it had created: make it again
                if tries > 3:
                    raise BnnflowError(
                        f"{self.option} {self.out}: its folder keeps disappearing; give another {self.option}"
                    ) from None
                self._make_parent()
                continue
            except OSError as exc:
                raise BnnflowError(
                    f"{self.option} {self.out}: cannot write in {self.out.parent} "
                    f"({_why(exc)}); give another {self.option}"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = os.read(fd, 64).decode(errors="replace").strip()
                os.close(fd)
                self.release()  # nothing of ours to keep: the folders made for the lock go again
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise BnnflowError(f"{self.path}: cannot lock ({_why(exc)})") from None
                raise BnnflowError(
                    f"{self.option} {self.out}: another bnnflow run{f' (pid {holder})' if holder else ''} is "
                    f"writing this folder (lock {self.path.name}); wait for it to finish or give another "
                    f"{self.option}"
                ) from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the previous holder removed the file after we opened it: take the new one
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            os.close(self.fd)
            self.fd = None
        for d in self.created:  # deepest first; the first one still in use ends it
            try:
                d.rmdir()
            except OSError:
                break
        self.created = []

    def __enter__(self) -> Lock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


# ---------------------------------------------------------------- signals
class _Signals:
    """While active, SIGINT/SIGTERM/SIGHUP raise :class:`Interrupted` (once); inside
    :meth:`deferred` they are held back until the block ends (the swap or the
    restore of a folder is never cut in half)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.previous: dict[int, Any] = {}
        self.fired: int | None = None
        self.pending: int | None = None
        self.defer = 0

    def _handler(self, signum: int, frame: Any) -> None:
        if self.defer or self.fired is not None:
            self.pending = self.pending or signum
            return
        self.fired = signum
        raise Interrupted(signum)

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for s in self.SIGNALS:
            try:
                self.previous[s] = signal.signal(s, self._handler)
            except (ValueError, OSError):
                pass

    def uninstall(self) -> None:
        for s, h in self.previous.items():
            with contextlib.suppress(ValueError, OSError, TypeError):
                signal.signal(s, h)
        self.previous.clear()

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        self.defer += 1
        try:
            yield
        finally:
            self.defer -= 1

    def raise_pending(self) -> None:
        if self.pending is not None and self.fired is None:
            self.fired = self.pending
            raise Interrupted(self.pending)


@contextlib.contextmanager
def signals_raise() -> Iterator[_Signals]:
    """SIGINT, SIGTERM and SIGHUP raise :class:`Interrupted` inside the block (main thread only)."""
    sig = _Signals()
    sig.install()
    try:
        yield sig
    finally:
        sig.uninstall()
        if sig.pending is not None and sig.fired is None:
            # held back while a folder was being swapped or restored: deliver it now, as sent
            os.kill(os.getpid(), sig.pending)


# ---------------------------------------------------------------- replace
def _rmtree(p: Path) -> None:
    if p.is_symlink() or p.is_file():
        p.unlink(missing_ok=True)
    else:
        shutil.rmtree(p, ignore_errors=True)


def recover(out: Path) -> list[str]:
    """Clean what killed runs left beside ``out`` (call with the lock held). Returns what was done."""
    done: list[str] = []
    if is_work_link(out):
        out.unlink()
        done.append(f"removed the link {out.name} of an unfinished run")
    parent = out.parent
    if not parent.is_dir():
        return done
    bprefix, oprefix = building_prefix(out), old_prefix(out)
    olds = sorted(
        (p for p in parent.iterdir() if p.name.startswith(oprefix) and p.is_dir()), key=lambda p: p.stat().st_mtime
    )
    if not out.exists() and not out.is_symlink():
        # killed between the two renames of a finished run: its folder is complete (the manifest is
        # written last), so it takes the place; otherwise the previous folder comes back
        finished = sorted(
            (p for p in parent.iterdir() if p.name.startswith(bprefix) and is_build(p)), key=lambda p: p.stat().st_mtime
        )
        if finished:
            finished[-1].rename(out)
            done.append(f"put in place the finished {out.name} of a run killed while renaming it")
        elif olds:
            olds.pop().rename(out)
            done.append(f"put back the previous {out.name} that an interrupted run had moved aside")
    for p in parent.iterdir():
        if p.name.startswith(bprefix) or p in olds:
            _rmtree(p)
            done.append(f"removed {p.name}")
    return done


class Replacement:
    """What :func:`replacing` yields: the work folder (``out`` links to it) and what recovery did."""

    def __init__(self, out: Path, work: Path, recovered: list[str]) -> None:
        self.out = out
        self.work = work
        self.recovered = recovered


@contextlib.contextmanager
def replacing(out: Path | str, option: str = "--out") -> Iterator[Replacement]:
    """Lock ``out``, clean up after killed runs, check ``out`` is ours, then let the block write the
    new contents through ``out`` (a link to a hidden work folder). The new folder replaces the
    previous one only when the block ends normally; on any exception or signal the previous
    one is put back and the work folder removed."""
    out = Path(os.path.abspath(out))
    if not out.name:
        raise BnnflowError(f"{option} {out}: give a folder to write, not the file system's root")
    with signals_raise() as sig, Lock(out, option):
        with sig.deferred():
            recovered = recover(out)
            check_owned(out, option)
            for line in recovered:  # nothing silent: say what was cleaned up
                print(f"bnnflow: {out}: {line}", file=sys.stderr)
            old: Path | None = None
            work: Path | None = None
            try:
                if out.exists():
                    old = Path(tempfile.mkdtemp(prefix=old_prefix(out), dir=out.parent))
                    old.rmdir()
                    out.rename(old)
                work = Path(tempfile.mkdtemp(prefix=building_prefix(out), dir=out.parent))
                work.chmod(dir_mode())
                out.symlink_to(work.name, target_is_directory=True)
            except OSError as exc:
                if work is not None:
                    _rmtree(work)
                if old is not None and not out.exists():
                    old.rename(out)
                raise BnnflowError(
                    f"{option} {out}: cannot write in {out.parent} ({_why(exc)}); give another {option}"
                ) from None
        try:
            sig.raise_pending()
            yield Replacement(out, work, recovered)
            sig.defer += 1  # from here on the new folder is in place: a signal waits for the end
            out.unlink()
            work.rename(out)
        except BaseException:
            with sig.deferred():
                if out.is_symlink():
                    out.unlink()
                _rmtree(work)
                if old is not None and not out.exists():
                    old.rename(out)
                    old = None
            if sig.fired is not None:
                raise Interrupted(sig.fired) from None
            raise
        finally:
            if old is not None and old.exists():
                _rmtree(old)


@contextlib.contextmanager
def writing(out: Path | str, option: str = "--out") -> Iterator[Path]:
    """A folder written file by file (a report, a sweep, a training run): checked writable and locked
    for the block, so two runs into one folder do not interleave. The temporary files of atomic
    writes that killed runs left in it are removed first; a folder the block leaves empty that did
    not exist before goes again (a failed run leaves nothing). SIGTERM and SIGHUP end the block like
    Ctrl-C (:class:`Interrupted`), so a killed run releases its lock and says how it stopped."""
    out = Path(os.path.abspath(out))
    check_output_dir(out, option)
    with signals_raise(), Lock(out, option):
        created = not out.exists()
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BnnflowError(f"{option} {out}: cannot create it ({_why(exc)}); give another {option}") from None
        try:
            remove_stale_temporaries(out)
            yield out
        finally:
            if created:
                with contextlib.suppress(OSError):
                    out.rmdir()  # only if empty
