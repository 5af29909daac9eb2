"""One build at a time per output folder: a lock file in `.build/` that names its holder.

The lock is an exclusive `flock` on the file, which the kernel drops when the holder exits, even
on `kill -9`; the file's content (pid, host, start time) is what a refused build prints. Content
found on a lock nobody holds was left by a build that died: a stale lock, taken over.
"""
from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import socket


class LockHeld(RuntimeError):
    """Another live build holds the output folder; the message names it."""


class OutputLock:
    """`acquire()` … `release()` (or `with OutputLock(path):`) holds the lock; after acquiring,
    `stale` is what a dead holder left (its pid, host and start time), or None."""

    def __init__(self, path: str):
        self.path = path
        self.stale = None
        self._fd = None

    def acquire(self) -> None:
        """Take the lock; LockHeld naming the holder when a live build has it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            raise LockHeld(f"{os.path.dirname(os.path.dirname(self.path))}: another build is writing here: "
                           f"{describe(holder)} (lock {self.path}); wait for it, or stop it and run the same "
                           f"command again") from None
        try:
            self.stale = _read(fd) or None
            me = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": dt.datetime.now().astimezone().isoformat(timespec="seconds")}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(me).encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        try:
            os.ftruncate(self._fd, 0)  # a clean exit leaves nothing to call stale
        except OSError:
            pass
        os.close(self._fd)  # drops the flock
        self._fd = None

    def __enter__(self) -> "OutputLock":
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()
        return False


def describe(holder: dict) -> str:
    """'pid 123 on host since 2024-01-01T10:00:00+01:00' (what is known of it)."""
    if not holder:
        return "a build that has not yet said who it is"
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} since {holder.get('started', '?')}"


def _read(fd: int) -> dict:
    """The holder's record; {} for an empty file."""
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        holder = json.loads(text) if text else {}
    except (OSError, ValueError):
        holder = None
    return holder if isinstance(holder, dict) else {"started": "? (unreadable lock file)"}
