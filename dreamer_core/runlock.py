"""One run per logdir: an OS file lock on `<logdir>/run.lock`, plus the holder's host and PID.

Two runs writing one logdir would interleave replay, checkpoints and metrics. The OS lock
(`fcntl.lockf`, a POSIX lock that NFS forwards to its lock daemon) is released by the kernel
when the holder dies, however it dies, so a crashed run never blocks its own resume. Some network
filesystems grant every lock; there the record in the file decides: a holder recorded on this
host whose process is gone (or is another process that reused the PID) is stale; a live one
blocks. A record from another host cannot be checked from here and the OS lock is trusted.
"""

import atexit
import datetime
import fcntl
import json
import os
import socket

from dreamer_core.errors import UserError

LOCK_NAME = 'run.lock'
_held = []  # open lock files of this process; closing one would drop its POSIX lock


class LockError(UserError):
    """The logdir is in use by another live run; the message names its host and PID."""


def acquire(logdir):
    """Lock `logdir` for this process until it exits, or raise LockError."""
    path = logdir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # EAGAIN or EACCES: another process holds it
            raise LockError(_in_use(logdir, _read(fd))) from None
        holder = _read(fd)
        if holder and _alive_elsewhere(holder):
            raise LockError(_in_use(logdir, holder))
        _write(fd, _me())
    except BaseException:
        os.close(fd)
        raise
    _held.append(fd)
    atexit.register(_release, fd)
    return path


def _release(fd):
    """Clear the record on a normal exit; the kernel drops the lock itself."""
    try:
        os.ftruncate(fd, 0)
        os.close(fd)
    except OSError:
        pass


def _me():
    return {
        'host': socket.gethostname(),
        'pid': os.getpid(),
        'start': _start_time(os.getpid()),
        'since': datetime.datetime.now().isoformat(timespec='seconds'),
    }


def _alive_elsewhere(holder):
    """True when the record names another live process on this host."""
    if holder.get('host') != socket.gethostname() or holder.get('pid') == os.getpid():
        return False
    pid = holder.get('pid')
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by another user
    start = _start_time(pid)
    # A live process with another start time reused the PID of a dead holder.
    return start is None or holder.get('start') in (None, start)


def _start_time(pid):
    """The process start time in clock ticks since boot (Linux), or None."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            return int(f.read().rsplit(')', 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _read(fd):
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = os.read(fd, 4096)
        holder = json.loads(data) if data.strip() else None
    except (OSError, ValueError):
        return None  # unreadable or half written: no usable record
    return holder if isinstance(holder, dict) else None


def _write(fd, holder):
    data = (json.dumps(holder) + '\n').encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    os.fsync(fd)


def _in_use(logdir, holder):
    if not holder:
        who = 'another process (its host and PID are not recorded yet)'
    else:
        who = f'PID {holder.get("pid")} on host {holder.get("host")}, since {holder.get("since")}'
    return (
        f'The log directory {logdir} is in use by another run: {who}. Wait for it to finish '
        'or stop it, or choose another --logdir.'
    )
