"""Unpacking packages from elsewhere: no path escapes, no links, no zip bombs."""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path, PurePosixPath

from zaugnet.training.errors import InputError

#: Refuse archives that would unpack to more than this (bytes) or hold more entries than this.
MAX_UNPACKED_BYTES = 8 * 1024**3
MAX_ENTRIES = 10_000


def _safe_member(info: zipfile.ZipInfo, archive: Path) -> PurePosixPath | None:
    """The entry's relative path, or None for a folder entry; InputError for anything unsafe."""
    name = info.filename
    if "\\" in name or "\x00" in name:
        raise InputError(archive, f"refused: zip entry {name!r} has a backslash or NUL in its name")
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith("/") or (path.parts and ":" in path.parts[0]):
        raise InputError(archive, f"refused: zip entry {name!r} is an absolute path")
    if any(part == ".." for part in path.parts):
        raise InputError(archive, f"refused: zip entry {name!r} points outside the package (..)")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise InputError(archive, f"refused: zip entry {name!r} is a symbolic link")
    if name.endswith("/"):
        return None
    if not path.parts or any(part in ("", ".") for part in path.parts):
        raise InputError(archive, f"refused: zip entry {name!r} has an empty or '.' path part")
    return path


def check_zip(archive: str | Path) -> list[zipfile.ZipInfo]:
    """The file entries of ``archive`` after checking every entry is safe to unpack.

    Raises
    ------
    InputError
        For a file that is not a zip, an entry with ``..`` or an absolute path, a link, duplicate
        names, or an archive unpacking to more than :data:`MAX_UNPACKED_BYTES`.
    """
    archive = Path(archive)
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError) as err:
        raise InputError(archive, f"not a readable zip file ({err})") from None
    if len(infos) > MAX_ENTRIES:
        raise InputError(archive, f"refused: {len(infos)} entries (more than {MAX_ENTRIES})")
    files, seen, total = [], set(), 0
    for info in infos:
        path = _safe_member(info, archive)
        if path is None:
            continue
        key = str(path).lower()
        if key in seen:
            raise InputError(archive, f"refused: zip entry {info.filename!r} appears twice")
        seen.add(key)
        total += info.file_size
        if total > MAX_UNPACKED_BYTES:
            raise InputError(archive, f"refused: unpacks to more than {MAX_UNPACKED_BYTES} bytes")
        files.append(info)
    return files


def extract_zip(archive: str | Path, target: str | Path) -> Path:
    """Unpack ``archive`` into the new folder ``target`` after :func:`check_zip`; files only, no permissions kept."""
    archive, target = Path(archive), Path(target)
    files = check_zip(archive)
    target.mkdir(parents=True, exist_ok=False)
    root = target.resolve()
    with zipfile.ZipFile(archive) as zf:
        for info in files:
            dest = (root / info.filename).resolve()
            if os.path.commonpath([root, dest]) != str(root):  # belt and braces after check_zip
                raise InputError(archive, f"refused: zip entry {info.filename!r} points outside the package")
            dest.parent.mkdir(parents=True, exist_ok=True)
            written = 0
            with zf.open(info) as src, open(dest, "xb") as dst:
                while chunk := src.read(1 << 20):
                    written += len(chunk)
                    if written > info.file_size:
                        raise InputError(archive, f"refused: zip entry {info.filename!r} is larger than declared")
                    dst.write(chunk)
    return target
