"""Reading packages from elsewhere: a bounded rdf reader, and unpacking with no path escapes, no links, no bombs.

- :func:`parse_rdf` reads an rdf's YAML text of at most :data:`MAX_RDF_BYTES`, without anchors or aliases
  (no "billion laughs") and nested at most :data:`MAX_RDF_DEPTH` deep;
- :func:`extract_package` (the one extraction routine, for zip files and zips opened by bioimageio.spec)
  checks every entry before anything is written, reads the rdf entry first, unpacks only the files the rdf
  lists, counts the bytes of each while streaming (capped at its declared size) and leaves nothing behind
  when it refuses.
"""

from __future__ import annotations

import io
import shutil
import stat
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Any
from urllib.parse import urlparse

import yaml

from zaugnet.errors import InputError

#: Refuse archives that would unpack to more than this (bytes) or hold more entries than this.
MAX_UNPACKED_BYTES = 8 * 1024**3
MAX_ENTRIES = 10_000
#: Largest rdf text read (bytes) and deepest nesting of its mappings and lists.
MAX_RDF_BYTES = 1024**2
MAX_RDF_DEPTH = 32
RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")
_CHUNK = 1 << 20


# ------------------------------------------------------------------------------------ the rdf
class _RdfLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing anchors and aliases and bounding the nesting depth while composing."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:  # noqa: ANN401 - PyYAML's
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.YAMLError("anchors and aliases (&, *) are not allowed in an rdf")
        self._depth += 1
        if self._depth > MAX_RDF_DEPTH:
            raise yaml.YAMLError(f"nested deeper than {MAX_RDF_DEPTH} levels")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def parse_rdf(text: str | bytes, label: str | Path) -> dict[str, Any]:
    """The rdf as a dict: UTF-8 YAML of at most :data:`MAX_RDF_BYTES`, no anchors or aliases, bounded depth.

    Raises
    ------
    InputError
        For anything else, or a top level that is not a mapping.
    """
    size = len(text.encode("utf-8") if isinstance(text, str) else text)
    if size > MAX_RDF_BYTES:
        raise InputError(label, f"refused: the rdf is larger than {MAX_RDF_BYTES} bytes")
    try:
        rdf = yaml.load(text if isinstance(text, str) else text.decode("utf-8"), Loader=_RdfLoader)  # noqa: S506
    except UnicodeDecodeError:
        raise InputError(label, "the rdf is not UTF-8 text") from None
    except yaml.YAMLError as err:
        detail = str(err).splitlines()[0] if str(err) else err.__class__.__name__
        raise InputError(label, f"the rdf is not readable YAML ({detail})") from None
    if not isinstance(rdf, dict):
        raise InputError(label, "the rdf is not a mapping")
    return rdf


def read_bounded(stream: IO[bytes], limit: int, label: str | Path, what: str) -> bytes:
    """At most ``limit`` bytes of ``stream``; InputError when it holds more."""
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise InputError(label, f"refused: {what} is larger than {limit} bytes")
    return data


#: Top-level rdf fields that may name a file as a plain string (the form deepImageJ's JDLL reads).
PLAIN_FILE_FIELDS = ("documentation", "covers")


def file_refs(node: Any, where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:  # noqa: ANN401 - YAML data
    """Every file the rdf names, as a ``{source: ..., (sha256: ...)}`` mapping, with its location.

    Plain-string ``documentation`` and ``covers`` entries (no sha256) count too, unless they are URLs.
    """
    if not where and isinstance(node, dict):
        for key in PLAIN_FILE_FIELDS:
            value = node.get(key)
            for i, item in enumerate(value if isinstance(value, list) else [value]):
                if isinstance(item, str) and not urlparse(item).scheme:
                    yield (f"{key}[{i}]" if isinstance(value, list) else key), {"source": item}
    if isinstance(node, dict):
        if isinstance(node.get("source"), str):
            yield where or "rdf", node
        for key, value in node.items():
            if key not in ("config", "kwargs"):  # free-form values, not file references
                yield from file_refs(value, f"{where}.{key}" if where else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from file_refs(value, f"{where}[{i}]")


def relative_source(source: str, where: str, package: str | Path) -> PurePosixPath:
    """A file reference as a path inside the package; InputError for URLs, absolute paths and ``..``."""
    if urlparse(source).scheme or source.startswith("/") or "\\" in source:
        raise InputError(package, f"{where}: source {source!r} is not a file inside the package")
    path = PurePosixPath(source)
    if any(part in ("..", "") for part in path.parts) or not path.parts:
        raise InputError(package, f"{where}: source {source!r} points outside the package")
    return path


def package_files(rdf: dict[str, Any], label: str | Path) -> set[PurePosixPath]:
    """The files the rdf lists, as paths inside the package (InputError for any that is not)."""
    return {relative_source(ref["source"], where, label) for where, ref in file_refs(rdf)}


# ------------------------------------------------------------------------------------ zips
def _safe_member(info: zipfile.ZipInfo, archive: str | Path) -> PurePosixPath | None:
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


def _checked_entries(zf: zipfile.ZipFile, label: str | Path) -> dict[PurePosixPath, zipfile.ZipInfo]:
    """Path -> entry of every file in ``zf`` after checking all entries (names, links, count, duplicates, size)."""
    infos = zf.infolist()
    if len(infos) > MAX_ENTRIES:
        raise InputError(label, f"refused: {len(infos)} entries (more than {MAX_ENTRIES})")
    files: dict[PurePosixPath, zipfile.ZipInfo] = {}
    seen: set[str] = set()
    total = 0
    for info in infos:
        path = _safe_member(info, label)
        if path is None:
            continue
        if str(path).lower() in seen:
            raise InputError(label, f"refused: zip entry {info.filename!r} appears twice")
        seen.add(str(path).lower())
        total += info.file_size
        if total > MAX_UNPACKED_BYTES:
            raise InputError(label, f"refused: unpacks to more than {MAX_UNPACKED_BYTES} bytes")
        files[path] = info
    return files


def _copy_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dst: IO[bytes], label: str | Path) -> None:
    """Stream one entry to ``dst``, refusing more bytes than its header declares (and damaged data)."""
    written = 0
    try:
        with zf.open(info) as src:
            while chunk := src.read(_CHUNK):
                written += len(chunk)
                if written > info.file_size:
                    raise InputError(label, f"refused: zip entry {info.filename!r} is larger than declared")
                dst.write(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as err:
        raise InputError(label, f"refused: zip entry {info.filename!r} is damaged or lies about its size "
                                f"({err.__class__.__name__}: {err})") from None


def _write_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path, label: str | Path) -> None:
    """One entry to the new file ``dest`` (its folders created)."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(dest, "xb") as dst:
            _copy_entry(zf, info, dst, label)
    except OSError as err:
        raise InputError(label, f"cannot unpack zip entry {info.filename!r} ({err.__class__.__name__})") from None


def _read_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, label: str | Path) -> bytes:
    """A small entry's bytes (bounded by its declared size, which the caller has bounded)."""
    buffer = io.BytesIO()
    _copy_entry(zf, info, buffer, label)
    return buffer.getvalue()


def extract_package(zf: zipfile.ZipFile, target: str | Path, label: str | Path) -> Path:
    """Unpack the package in ``zf`` into the new folder ``target``: its rdf and the files the rdf lists, only.

    Every entry is checked first (:func:`_safe_member`, count, duplicates, declared total size); the rdf
    is read (bounded, :func:`parse_rdf`) before anything is written; entries the rdf does not list are
    skipped; files the rdf lists but the zip lacks are left for the package check to report.

    Raises
    ------
    InputError
        For an unsafe or damaged archive, or one without a root ``rdf.yaml``; ``target`` is then removed.
    """
    target = Path(target)
    entries = _checked_entries(zf, label)
    rdf_path = next((PurePosixPath(n) for n in RDF_NAMES if PurePosixPath(n) in entries), None)
    if rdf_path is None:
        raise InputError(label, f"no {' or '.join(RDF_NAMES)} at the top of the zip: not a BioImage.IO package")
    rdf_info = entries[rdf_path]
    if rdf_info.file_size > MAX_RDF_BYTES:
        raise InputError(label, f"refused: the rdf is larger than {MAX_RDF_BYTES} bytes")
    wanted = package_files(parse_rdf(_read_entry(zf, rdf_info, label), label), label) | {rdf_path}
    target.mkdir(parents=True, exist_ok=False)
    try:
        for path in sorted(wanted & entries.keys()):
            _write_entry(zf, entries[path], target.joinpath(*path.parts), label)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return target


def extract_zip(archive: str | Path, target: str | Path) -> Path:
    """Unpack the package zip ``archive`` into the new folder ``target`` with :func:`extract_package`."""
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as err:
        raise InputError(archive, f"not a readable zip file ({err})") from None
    with zf:
        return extract_package(zf, target, archive)
