"""One command at a time per folder: a lock file that names its holder.

Used for a build's output folder (`.build/lock`), a synthetic cache entry (`CACHE/NAME.lock`)
and, by `tf_fusion`, a run or study folder (`RUN/.lock`). The lock is an exclusive `flock` on the
file, which the kernel drops when the holder exits, even on `kill -9`; the file's content (the
command, pid, host, start time) is what a refused command prints. Content found on a lock nobody
holds was left by a command that died: a stale lock, taken over with a one-line note.

A second command refuses at once (`LockHeld`), or with `acquire(wait=True)` says whom it waits
for in one line and waits. A re-entrant lock (`reentrant=True`) may be taken again by the process
that holds it (nested steps of one job); it is released when the outermost holder releases it.
"""
from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import socket
import sys
import threading


class LockHeld(RuntimeError):
    """Another live command holds the folder; the message names it (command, pid, host, start)."""


_HELD: dict = {}  # realpath of a re-entrant lock file → [pid, depth, OutputLock] held by this process
_HELD_GUARD = threading.Lock()


class OutputLock:
    """`acquire()` … `release()` (or `with OutputLock(path):`) holds the lock on ``folder``
    (default: the folder above the lock file's folder, e.g. OUT for OUT/.build/lock); after
    acquiring, `stale` is what a dead holder left (its command, pid, host and start time), or None."""

    def __init__(self, path: str, folder: str | None = None, command: str | None = None, reentrant: bool = False):
        self.path = os.fspath(path)
        self.folder = os.fspath(folder) if folder is not None else os.path.dirname(os.path.dirname(self.path))
        self.command = command or this_command()
        self.reentrant = reentrant
        self.stale = None
        self._fd = None
        self._outer = None  # the OutputLock of this process that really holds the file (re-entrant)

    def acquire(self, wait: bool = False, log=None) -> None:
        """Take the lock. A live holder: LockHeld naming it, or with ``wait`` one line to ``log``
        ("waiting for …") and a wait. A dead holder's lock is taken over with a note to ``log``."""
        if self.reentrant and self._reenter():
            return
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if not self._lock(fd, wait, log):
                    continue  # the file was replaced while we waited for it: lock the one in place
            except BaseException:
                os.close(fd)
                raise
            break
        try:
            self.stale = _read(fd) or None
            me = {"command": self.command, "pid": os.getpid(), "host": socket.gethostname(),
                  "started": dt.datetime.now().astimezone().isoformat(timespec="seconds")}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(me).encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        if self.reentrant:
            with _HELD_GUARD:
                _HELD[os.path.realpath(self.path)] = [os.getpid(), 1, self]
        if self.stale and log is not None:
            log(f"note: {self.folder}: taking over the stale lock of {describe(self.stale)}, which is no longer running")

    def _lock(self, fd: int, wait: bool, log) -> bool:
        """flock ``fd``; False when the path no longer names the file locked (try again)."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            if not wait:
                raise LockHeld(f"{self.folder}: another command is using it: {describe(holder)} (lock {self.path}); "
                               f"wait for it to finish, or stop it and run the same command again") from None
            if log is not None:
                log(f"{self.folder}: waiting for {describe(holder)}, which is writing it")
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(self.path))
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
        return same

    def _reenter(self) -> bool:
        with _HELD_GUARD:
            entry = _HELD.get(os.path.realpath(self.path))
            if entry is None or entry[0] != os.getpid():
                return False
            entry[1] += 1
            self._outer = entry[2]
            return True

    def release(self) -> None:
        if self._outer is not None:  # a nested holder: the outermost one releases the file
            with _HELD_GUARD:
                _HELD[os.path.realpath(self.path)][1] -= 1
            self._outer = None
            return
        if self.reentrant:
            with _HELD_GUARD:
                _HELD.pop(os.path.realpath(self.path), None)
        try:
            os.ftruncate(self._fd, 0)  # a clean exit leaves nothing to call stale
        except OSError:
            pass
        os.close(self._fd)  # drops the flock
        self._fd = None

    @property
    def outermost(self) -> bool:
        """True for the holder that took the file (not a nested re-entry)."""
        return self._outer is None

    def __enter__(self) -> "OutputLock":
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()
        return False


def this_command() -> str:
    """How this process was started, shortly: 'python -m tf_fusion.train', 'python script.py',
    'python -c', 'pytest' (a console script)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:
        return f"python -m {spec.name.removesuffix('.__main__')}"
    script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return f"python {script}" if script.endswith(".py") or script == "-c" else script or "python"


def describe(holder: dict) -> str:
    """'`python -m tf_fusion.train` pid 123 on host since 2024-01-01T10:00:00+01:00' (what is known)."""
    if not holder:
        return "a command that has not yet said who it is"
    command = f"`{holder['command']}` " if holder.get("command") else ""
    return f"{command}pid {holder.get('pid', '?')} on {holder.get('host', '?')} since {holder.get('started', '?')}"


def _read(fd: int) -> dict:
    """The holder's record; {} for an empty file."""
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        holder = json.loads(text) if text else {}
    except (OSError, ValueError):
        holder = None
    return holder if isinstance(holder, dict) else {"started": "? (unreadable lock file)"}
