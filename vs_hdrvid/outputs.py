"""Writing a run's output safely: one writer per output, temporary names, and nothing left behind.

:func:`claim` takes an exclusive lock on an output (a file, or a frame pattern such as
``out/%05d.exr``) for the whole run, so a second run writing the same output is refused instead of
mixing its frames in; it creates the output folder and records what the run writes. If the run
fails or is interrupted, it removes exactly the files this run wrote and the folders it created
(when empty), and nothing else. Each file goes through :meth:`Claim.atomic`: written under a hidden
temporary name beside it and renamed when complete. Files that other processes write for the run
(the segments of a distributed run) go to :meth:`Claim.staging` and become the output's through
:meth:`Claim.adopt`.
"""
from __future__ import annotations

import errno
import fcntl
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, ContextManager, Iterator

__all__ = ["OutputError", "OutputBusy", "Claim", "claim", "atomic_path", "Atomic"]

Atomic = Callable[[str | os.PathLike], ContextManager[str]]  # Claim.atomic, or atomic_path

class OutputError(OSError):
    """The output cannot be written; the message is one line for the user, with no temporary names."""


class OutputBusy(OutputError):
    """Another run holds the lock on the same output."""


def _why(e: OSError) -> str:
    return e.strerror or type(e).__name__


def _make_folders(folder: Path, output: str) -> list[Path]:
    """Create ``folder`` and its missing parents; returns the ones created, outermost first."""
    missing = []
    p = folder
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    if p.exists() and not p.is_dir() and missing:
        raise OutputError(f"cannot write {output}: {p} is a file, not a folder")
    created = []
    try:
        for q in reversed(missing):
            q.mkdir()
            created.append(q)
    except OSError as e:
        _remove_folders(created)
        raise OutputError(f"cannot write {output}: cannot create the folder {q} ({_why(e)})") from None
    if not folder.is_dir():
        raise OutputError(f"cannot write {output}: {folder} is not a folder")
    return created


def _remove_folders(created: list[Path]) -> None:
    for q in reversed(created):  # innermost first; only folders this run made, only if empty
        try:
            q.rmdir()
        except OSError:
            pass


class Claim:
    """The right to write one output, held from :func:`claim` until the run ends.

    Attributes:
        output: the output as given (a file or a frame pattern).
        written: final paths this run wrote, in order.
    """

    def __init__(self, output: str | os.PathLike):
        self.output = os.fspath(output)
        self.folder = Path(self.output).parent
        self.written: list[str] = []
        self._created: list[Path] = []
        self._lock_fd: int | None = None
        self._lock_path = self.folder / f".{Path(self.output).name}.lock"

    def _acquire(self) -> None:
        self._created = _make_folders(self.folder, self.output)
        while True:
            try:
                fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as e:
                _remove_folders(self._created)
                raise OutputError(f"cannot write {self.output}: cannot create files in {self.folder} "
                                  f"({_why(e)})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                holder = os.read(fd, 32).decode(errors="replace").strip()
                os.close(fd)
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise OutputError(f"cannot lock {self.output}: {_why(e)}") from None
                who = f" (pid {holder})" if holder.isdigit() else ""
                raise OutputBusy(f"another run{who} is writing {self.output}; wait for it to finish or "
                                 "choose another output") from None
            try:  # a run that just finished may have removed the file we opened: lock the current one
                same = os.path.samestat(os.fstat(fd), os.stat(self._lock_path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _release(self, failed: bool) -> None:
        if failed:
            for path in reversed(self.written):
                Path(path).unlink(missing_ok=True)
            self.written.clear()
        if self._lock_fd is not None:
            self._lock_path.unlink(missing_ok=True)  # while still locked: a waiter then retries
            os.close(self._lock_fd)
            self._lock_fd = None
        if failed:
            _remove_folders(self._created)

    @contextmanager
    def atomic(self, path: str | os.PathLike) -> Iterator[str]:
        """A temporary path beside ``path``, renamed onto it when the block completes.

        On any error (the rename included) the temporary file is removed; ``path`` is then
        recorded as written by this run.

        Raises:
            OutputError: ``path`` is a folder, or the file cannot be created, written or renamed.
        """
        with atomic_path(path, self.output) as tmp:
            yield tmp
        self.written.append(os.fspath(path))

    @contextmanager
    def staging(self) -> Iterator[Path]:
        """A hidden folder beside the output (``.NAME.parts``) for files other processes write for
        this run; removed with everything in it when the block ends, however it ends.

        One left by a run that was killed is emptied first (this run holds the lock).

        Raises:
            OutputError: the folder cannot be created.
        """
        folder = Path(os.path.abspath(self.folder / f".{Path(self.output).name}.parts"))  # for other processes
        shutil.rmtree(folder, ignore_errors=True)
        try:
            folder.mkdir()
        except OSError as e:
            raise OutputError(f"cannot write {self.output}: cannot create files in {self.folder} "
                              f"({_why(e)})") from None
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def adopt(self, staged: str | os.PathLike, path: str | os.PathLike) -> None:
        """Rename a complete file from :meth:`staging` onto ``path``, recorded as written by this run.

        Raises:
            OutputError: ``path`` is a folder or cannot be written.
        """
        if Path(path).is_dir():
            raise OutputError(f"cannot write {self.output}: {path} is a folder")
        try:
            os.replace(staged, path)
        except OSError as e:
            raise OutputError(f"cannot write {path}: {_why(e)}") from None
        self.written.append(os.fspath(path))


@contextmanager
def claim(output: str | os.PathLike) -> Iterator[Claim]:
    """Hold the exclusive right to write ``output`` for the duration of the block.

    Raises:
        OutputBusy: another run holds it (the message says which process).
        OutputError: the folder cannot be created or takes no new files.
    """
    c = Claim(output)
    c._acquire()
    failed = True
    try:
        yield c
        failed = False
    finally:
        c._release(failed)


@contextmanager
def atomic_path(path: str | os.PathLike, output: str | None = None) -> Iterator[str]:
    """A temporary path (hidden, ``.part``) beside ``path``; renamed onto ``path`` on success.

    Nothing half-written is visible under the final name, and the temporary file is removed on
    any failure, a failed rename included. ``output`` names the run's output in messages.

    Raises:
        OutputError: ``path`` is a folder, or the file cannot be created, written or renamed; the
            message names ``path``, never the temporary name.
    """
    path = Path(path)
    what = output or os.fspath(path)
    if path.is_dir():
        raise OutputError(f"cannot write {what}: {path} is a folder")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix + ".part", dir=path.parent)
    except OSError as e:
        raise OutputError(f"cannot write {what}: cannot create files in {path.parent} ({_why(e)})") from None
    os.close(fd)
    try:
        try:
            yield tmp
        except OSError as e:
            if isinstance(e, OutputError):
                raise
            raise OutputError(f"cannot write {path}: {_why(e)}") from None
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 is not what a user expects
        try:
            os.replace(tmp, path)
        except OSError as e:
            raise OutputError(f"cannot write {path}: {_why(e)}") from None
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
