"""Atomic file writes: a crash leaves either the old file or the new one, never half of one."""

import os
import pathlib
import tempfile

from dreamer_core import faults

# mkstemp creates files readable by their owner only (0600); a renamed temporary file would keep
# that, so configs and results written here would be unreadable to the rest of a group sharing a
# cluster directory. New files get what open() would give them (0666 less the umask), replaced
# files keep their own mode. The umask is read once: reading it means setting it, which is not
# safe while other threads create files.
_UMASK = os.umask(0)
os.umask(_UMASK)
_NEW_FILE_MODE = 0o666 & ~_UMASK


def atomic_write(path, write, mode='wb', tmp=None, kill_point=None):
    """Call `write(file)` on a temporary file beside `path`, fsync it, then rename it to `path`.

    The temporary name (`tmp`, or a hidden `.<name>.*.tmp`) never looks like the final file, so a
    half-written one is never loaded; it is removed if the write fails. `kill_point` names the
    fault-injection point (dreamer_core/faults.py): a kill between the write and the rename,
    or a full disk during the write.
    """
    path = pathlib.Path(path)
    if tmp is None:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
        try:
            if hasattr(os, 'fchmod'):  # POSIX; elsewhere mkstemp's mode stays
                os.fchmod(fd, _mode_for(path))
        except BaseException:
            os.close(fd)
            pathlib.Path(tmp).unlink(missing_ok=True)
            raise
        file = os.fdopen(fd, mode)
    else:
        file = open(tmp, mode)
    try:
        with file:
            write(file)
            if kill_point:
                faults.fail_point(kill_point, path)
            file.flush()
            os.fsync(file.fileno())
        if kill_point:
            faults.kill_point(kill_point)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _mode_for(path):
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        return _NEW_FILE_MODE


def _fsync_directory(directory):
    # Makes the rename itself durable; not possible on every platform, so best effort.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
