"""Atomic file writes: write to a temporary file beside the target, then rename it over the target.

The temporary file is hidden and named ``.NAME.zaugnet-tmp-PID-HOST-RANDOM.SUFFIX`` (the writer's
process id and host), so a writer killed before the rename (SIGKILL, SIGTERM, power loss) leaves a
file recognisably ours: the next atomic write of the same target on the same host removes those
whose process is gone (:func:`remove_stale_temporaries`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import InputError

TMP_TAG = ".zaugnet-tmp-"
_NAME_KEPT = 120  # characters of the target's name kept in a temporary name (which must fit NAME_MAX)
_FULL = (errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC))  # a full disk, quota or size limit


def _host() -> str:
    """This machine's short host name, reduced to letters, digits and ``_``."""
    return re.sub(r"\W", "_", socket.gethostname().split(".")[0], flags=re.ASCII)[:32]


def _head(path: Path) -> str:
    """Start of the names of all temporary files for ``path``."""
    return f".{path.name[:_NAME_KEPT]}{TMP_TAG}"


def temporary_prefix(path: str | Path, pid: int | None = None) -> str:
    """Start of the name of a temporary file for ``path`` written by process ``pid`` (default: this one)."""
    return f"{_head(Path(path))}{os.getpid() if pid is None else pid}-{_host()}-"


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (another user's and a zombie count; POSIX only).

    0 and negative ids (process groups for ``os.kill``) count as alive, so nothing is removed for them.
    """
    if pid <= 0 or os.name != "posix":  # elsewhere os.kill(pid, 0) would end the process
        return True
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # gone, or an id no process can have
        return False
    except OSError:  # e.g. PermissionError: it exists, under another user
        return True
    return True


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Remove the temporary files for ``path`` that writers on this host left when they were killed.

    Only files named by :func:`temporary_prefix` for ``path``, from this host and from a process that
    no longer exists, are removed; anything else is left as is (nothing outside POSIX).

    Returns
    -------
    list of Path
        The files removed.
    """
    path = Path(path)
    head = _head(path)
    pattern = re.compile(rf"(\d+)-{re.escape(_host())}-")
    removed = []
    with contextlib.suppress(OSError), os.scandir(path.parent) as entries:
        for entry in entries:
            found = pattern.match(entry.name[len(head):]) if entry.name.startswith(head) else None
            if found and entry.is_file(follow_symlinks=False) and not process_alive(int(found.group(1))):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success rename it to ``path``.

    On any exception (KeyboardInterrupt and SystemExit included) the temporary file is removed and
    ``path`` is left as it was, so a reader never sees a partial file. Stale temporary files of
    killed writers of ``path`` are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    # keep the last suffixes (e.g. ".ome.tif") so writers that look at them behave the same
    suffix = "".join(path.suffixes[-2:])[-40:] or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=temporary_prefix(path), suffix=suffix, dir=path.parent)
    tmp_path = Path(tmp)
    try:
        os.close(fd)
        yield tmp_path
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp creates files readable by the owner only
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_error(path: str | Path, exc: OSError) -> InputError | None:
    """The :class:`InputError` for a failure to write ``path`` that the user can fix, else None.

    Covers a full disk or quota (and a file size limit: a short write), a read-only file system, a
    folder without write permission, a file where a folder is needed, and a name too long.
    """
    path = Path(path)
    # numpy's tofile reports a short write without errno; on a regular file only a full disk or a limit does that
    if exc.errno in _FULL or (exc.errno is None and re.search(r"\d+ requested and \d+ written", str(exc))):
        problem = "no space left on the disk (or a file size limit reached); free some space or write elsewhere"
    elif exc.errno == errno.EROFS:
        problem = "the file system is read-only; choose another output folder"
    elif exc.errno in (errno.EACCES, errno.EPERM):  # the folder of what could not be created
        folder = Path(exc.filename).parent if isinstance(exc.filename, str) else path.parent
        problem = f"permission denied in {folder}; choose a folder you can write to"
    elif exc.errno in (errno.EEXIST, errno.ENOTDIR):
        blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        if blocking is None:
            return None
        problem = f"{blocking} is a file, not a folder"
    elif exc.errno == errno.ENAMETOOLONG:
        problem = "the name is too long for the file system"
    else:
        return None
    return InputError(path, f"cannot be written: {problem}")
