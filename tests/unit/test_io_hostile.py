"""Tests of zaugnet.io.tiff on hostile files and hostile file systems.

Files claiming far more pixels than they hold must be refused before anything is decoded, with an
InputError naming them (not a MemoryError or a kill); writes the file system refuses must be
InputErrors naming the output, leaving no partial or temporary file; and temporary files of killed
writers must be removed by the next write. Reads that could exhaust memory run in a subprocess
whose address space is limited (RLIMIT_AS), with a timeout.
"""

from __future__ import annotations

import errno
import os
import re
import select
import signal
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from support import listing

from zaugnet import atomic
from zaugnet.errors import InputError
from zaugnet.io import tiff as io
from zaugnet.io.tiff import read_stack, write_stack

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX limits, signals and process ids")

GiB = 1 << 30
#: Address space of the reading subprocesses: Python with numpy and tifffile needs about 150 MB of it.
READ_LIMIT = 2 * GiB

READ = """
import sys
from zaugnet.errors import InputError
from zaugnet.io.tiff import read_stack
try:
    stack = read_stack(sys.argv[1])
except InputError as exc:
    print(f"InputError: {exc}")
    sys.exit(2)
print("read", stack.data.shape)
"""


def run_python(code: str, *args: str, address_space: int | None = None, file_size: int | None = None,
               timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh Python with optional RLIMIT_AS / RLIMIT_FSIZE (SIGXFSZ ignored: writes get EFBIG)."""

    def limit() -> None:
        import resource

        if address_space is not None:
            resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
        if file_size is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))

    env = os.environ | {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2"}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                          preexec_fn=limit, env=env, check=False)


def assert_refused(path: Path, message: str) -> None:
    """Reading ``path`` under :data:`READ_LIMIT` ends with an InputError naming it and saying ``message``."""
    result = run_python(READ, str(path), address_space=READ_LIMIT)
    assert result.returncode == 2, result.stdout + result.stderr[-3000:]
    assert result.stdout.startswith(f"InputError: {path}: "), result.stdout
    assert message in result.stdout, result.stdout


def assert_refused_for_memory(path: Path, claim_gb: float) -> None:
    """Reading ``path`` is refused, before decoding, for claiming at least ``claim_gb`` GB (plus decoding buffers,
    which depend on tifffile's thread count) when less than :data:`READ_LIMIT` is available."""
    result = run_python(READ, str(path), address_space=READ_LIMIT)
    assert result.returncode == 2, result.stdout + result.stderr[-3000:]
    found = re.fullmatch(rf"InputError: {re.escape(str(path))}: claims (\d+\.\d) GB of pixels, more than the "
                         r"(\d+\.\d) GB of memory available; for stacks larger than memory predict out of core to "
                         r"an OME-Zarr output \(ending in \.zarr\) from an uncompressed TIFF or OME-Zarr input\n",
                         result.stdout)
    assert found, result.stdout
    assert float(found.group(1)) >= claim_gb
    assert float(found.group(2)) < READ_LIMIT / 1e9


def zlib_zeros(nbytes: int) -> bytes:
    """A zlib stream (about nbytes / 1000 long) that decompresses to ``nbytes`` zeros (a multiple of 1 MiB)."""
    block = bytes(1 << 20)
    packer = zlib.compressobj(9)
    first = packer.compress(block) + packer.flush(zlib.Z_FULL_FLUSH)
    again = packer.compress(block) + packer.flush(zlib.Z_FULL_FLUSH)  # the same bytes for every further block
    adler32 = ((nbytes % 65521) << 16) | 1  # of nbytes zeros
    return first + again * (nbytes // len(block) - 1) + b"\x03\x00" + struct.pack(">I", adler32)


def write_claiming(path: Path, chunks: list[bytes], shape: tuple[int, ...], dtype: str, **layout: object) -> Path:
    """A zlib-compressed TIFF of ``shape`` whose tiles or strips are the given (pre-compressed) bytes."""
    tifffile.imwrite(path, iter(chunks), shape=shape, dtype=dtype, compression="zlib", photometric="minisblack",
                     **layout)
    return path


# --- reading: claims larger than memory ----------------------------------------------------


def test_tiles_claiming_more_than_memory_are_refused_unread(tmp_path: Path) -> None:
    # 16 x 40000 x 40000 uint16 (51 GB) in a few KB: one tile per page, never decoded
    path = write_claiming(tmp_path / "tiles.tif", [zlib.compress(bytes(1024))] * 16, (16, 40000, 40000), "uint16",
                          tile=(40000, 40000))
    assert path.stat().st_size < 52_000
    assert_refused_for_memory(path, 51.2)


def test_compressed_strips_claiming_more_than_memory_are_refused(tmp_path: Path) -> None:
    # 100 x 8000 x 8000 uint8 (6.4 GB) in about 20 KB of strips
    path = write_claiming(tmp_path / "strips.tif", [zlib.compress(bytes(1024))] * 100, (100, 8000, 8000), "uint8",
                          rowsperstrip=8000)
    assert path.stat().st_size < 25_000
    assert_refused_for_memory(path, 6.4)


def test_tiles_larger_than_the_image_are_refused(tmp_path: Path) -> None:
    # a 3 x 16 x 16 image whose tiles are 32768 x 32768: each really decodes to 2 GiB of zeros
    tile = zlib_zeros(32768 * 32768 * 2)
    path = write_claiming(tmp_path / "bigtiles.tif", [tile] * 3, (3, 16, 16), "uint16", tile=(32768, 32768))
    assert path.stat().st_size < 7_000_000
    assert_refused_for_memory(path, 2.1)


def test_ome_claiming_planes_it_does_not_hold_is_refused(tmp_path: Path) -> None:
    # OME-XML says 3000 x 3000 planes (74 GB): tifffile would return zeros for the missing 8999997
    xml = ('<?xml version="1.0" encoding="UTF-8"?><OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06">'
           '<Image ID="Image:0"><Pixels ID="Pixels:0" DimensionOrder="XYCZT" Type="uint16" SizeX="64" SizeY="64" '
           'SizeC="1" SizeZ="3000" SizeT="3000"><Channel ID="Channel:0:0" SamplesPerPixel="1"/><TiffData/>'
           '</Pixels></Image></OME>')
    path = tmp_path / "claims.ome.tif"
    tifffile.imwrite(path, np.zeros((3, 64, 64), np.uint16), description=xml, metadata=None,
                     photometric="minisblack")
    assert_refused(path, "not a readable TIFF file (truncated or corrupted: OME series is missing 8999997 frames)")


def test_ordinary_stack_reads_under_the_same_limit(tmp_path: Path) -> None:
    path = write_stack(tmp_path / "ok.tif", np.zeros((20, 512, 512), np.uint16))  # 10 MB
    result = run_python(READ, str(path), address_space=READ_LIMIT)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert result.stdout.strip() == "read (20, 512, 512)"


def test_memory_check_spares_memory_maps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plain = write_stack(tmp_path / "plain.tif", np.ones((4, 64, 64), np.uint16))
    packed = tmp_path / "packed.tif"
    tifffile.imwrite(packed, np.ones((4, 64, 64), np.uint16), compression="zlib", photometric="minisblack")
    monkeypatch.setattr(io, "available_memory", lambda: 1000)
    stack = read_stack(plain, mmap=True)  # out of core: not refused
    assert isinstance(stack.data, np.memmap)
    assert int(stack.data.sum()) == 4 * 64 * 64
    for path, mmap in [(plain, False), (packed, True), (packed, False)]:
        with pytest.raises(InputError, match=r"claims 0\.0 GB of pixels, more than the 0\.0 GB") as info:
            read_stack(path, mmap=mmap)
        assert info.value.where == str(path)


def test_memory_available_counts_the_address_space_limit() -> None:
    code = "from zaugnet.io.tiff import available_memory; print(available_memory())"
    result = run_python(code, address_space=READ_LIMIT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 0 < int(result.stdout) < READ_LIMIT


@pytest.mark.parametrize(
    ("files", "free"),
    [
        ({"/proc/self/cgroup": "0::/job/step\n", "/sys/fs/cgroup/job/step/memory.max": "max\n",
          "/sys/fs/cgroup/job/memory.max": "4000000000\n", "/sys/fs/cgroup/job/memory.current": "3500000000\n",
          "/sys/fs/cgroup/job/memory.stat": "anon 2000000000\nfile 1500000000\n"}, [2_000_000_000]),
        ({"/proc/self/cgroup": "5:cpu,cpuacct:/\n4:memory:/hidden/by/namespace\n",
          "/sys/fs/cgroup/memory/memory.limit_in_bytes": "3000000000",
          "/sys/fs/cgroup/memory/memory.usage_in_bytes": "2500000000",
          "/sys/fs/cgroup/memory/memory.stat": "cache 9\ntotal_cache 500000000\n"}, [1_000_000_000]),
        ({"/proc/self/cgroup": "0::/\n"}, []),
    ],
)
def test_cgroup_limits(monkeypatch: pytest.MonkeyPatch, files: dict[str, str], free: list[int]) -> None:
    monkeypatch.setattr(io, "_read_text", lambda path: files.get(str(path), ""))
    assert io._cgroup_free() == free


# --- writing: what the file system refuses -------------------------------------------------


@pytest.mark.parametrize("below", ["out.tif", "sub/out.tif"])
def test_write_below_a_file(tmp_path: Path, below: str) -> None:
    blocker = tmp_path / "notes.txt"
    blocker.write_text("not a folder")
    with pytest.raises(InputError, match=f"cannot be written: {re.escape(str(blocker))} is a file, not a folder"
                       ) as info:
        write_stack(blocker / below, np.zeros((3, 8, 8), np.uint8))
    assert info.value.where == str(blocker / below)
    assert listing(tmp_path) == ["notes.txt"]
    assert blocker.read_text() == "not a folder"


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (errno.ENOSPC, "no space left on the disk"),
        (errno.EDQUOT, "no space left on the disk"),
        (errno.EFBIG, "no space left on the disk (or a file size limit reached)"),
        (errno.EROFS, "the file system is read-only"),
        (errno.EACCES, "permission denied in {folder}"),
        (errno.EPERM, "permission denied in {folder}"),
        (errno.ENAMETOOLONG, "the name is too long"),
    ],
)
def test_write_errors_the_user_can_fix_are_named(tmp_path: Path, code: int, message: str) -> None:
    """Each errno a user can act on becomes one message naming the output (those that cannot be produced
    for real here, such as a read-only file system, are covered only by this mapping)."""
    path = tmp_path / "out.ome.tif"
    error = atomic.write_error(path, OSError(code, os.strerror(code), str(tmp_path / ".out.tmp")))
    assert error is not None and error.where == str(path)
    assert str(error).startswith(f"{path}: cannot be written: ")
    assert message.format(folder=tmp_path) in str(error)
    assert atomic.write_error(path, OSError(errno.EIO, "I/O error")) is None  # not the user's to fix: raised as is


UNPRIVILEGED_WRITE = """
import os, sys
import numpy as np
from zaugnet.errors import InputError
from zaugnet.io.tiff import write_stack
if os.getuid() == 0:
    os.setgid(65534)
    os.setuid(65534)  # nobody: the permission bits of the folder apply
try:
    write_stack(sys.argv[1], np.zeros((3, 8, 8), np.uint8))
except InputError as exc:
    print(f"InputError: {exc}")
    sys.exit(2)
"""


def test_unwritable_folder() -> None:
    """A folder the (unprivileged) user may read but not write: refused naming it, nothing written."""
    with tempfile.TemporaryDirectory() as tmp:  # pytest's own folders are closed to other users
        folder = Path(tmp) / "locked"
        folder.mkdir()
        folder.chmod(0o555)
        Path(tmp).chmod(0o755)
        result = run_python(UNPRIVILEGED_WRITE, str(folder / "out.tif"))
        assert result.returncode == 2, result.stdout + result.stderr[-3000:]
        assert result.stdout.startswith(f"InputError: {folder / 'out.tif'}: cannot be written: permission denied "
                                        f"in {folder};"), result.stdout
        assert listing(folder) == []


WRITE = """
import sys
import numpy as np
from zaugnet.errors import InputError
from zaugnet.io.tiff import write_stack
try:
    write_stack(sys.argv[1], np.ones((16, 256, 256), np.uint16), overwrite=True)  # 2 MB
except InputError as exc:
    print(f"InputError: {exc}")
    sys.exit(2)
"""


@pytest.mark.parametrize("existing", [False, True])
def test_disk_full(tmp_path: Path, existing: bool) -> None:
    path = tmp_path / "out.tif"
    if existing:
        write_stack(path, np.zeros((3, 8, 8), np.uint8))
    before = path.read_bytes() if existing else None
    result = run_python(WRITE, str(path), file_size=1 << 20)  # writes past 1 MiB fail with EFBIG, as on a full disk
    assert result.returncode == 2, result.stdout + result.stderr[-3000:]
    assert result.stdout.startswith(f"InputError: {path}: cannot be written: no space left on the disk"), result.stdout
    assert listing(tmp_path) == (["out.tif"] if existing else [])
    assert (path.read_bytes() if existing else None) == before


# --- temporary files -----------------------------------------------------------------------


def finished_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path: Path) -> None:
    path = tmp_path / "out.tif"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        dead = finished_pid()
        assert re.fullmatch(rf"\.out\.tif\.zaugnet-tmp-{dead}-\w+-", atomic.temporary_prefix(path, dead))
        stale = tmp_path / f"{atomic.temporary_prefix(path, dead)}a1b2c3d4.tif"
        kept = [
            tmp_path / f"{atomic.temporary_prefix(path, sleeper.pid)}e5f6g7h8.tif",  # a writer still running
            tmp_path / f".out.tif.zaugnet-tmp-{dead}-elsewhere{os.getpid()}-a1b2c3d4.tif",  # another host's
            tmp_path / f"{atomic.temporary_prefix(tmp_path / 'other.tif', dead)}a1b2c3d4.tif",  # another output's
            tmp_path / ".out.tif.a1b2c3d4.tif",  # not ours
        ]
        for temporary in [stale, *kept]:
            temporary.write_bytes(bytes(100))
        write_stack(path, np.ones((3, 8, 8), np.uint8))
        assert not stale.exists()
        assert all(temporary.exists() for temporary in kept)
        assert listing(tmp_path) == sorted(["out.tif", *(p.name for p in kept)])
        np.testing.assert_array_equal(read_stack(path).data, np.ones((3, 8, 8), np.uint8))
    finally:
        sleeper.kill()
        sleeper.wait()


def test_process_alive() -> None:
    assert atomic.process_alive(os.getpid())
    assert not atomic.process_alive(finished_pid())
    assert not atomic.process_alive(10**20)  # no process can have it (os.kill raises OverflowError)
    assert atomic.process_alive(0) and atomic.process_alive(-1)  # process groups: never taken for dead


SLOW_WRITE = """
import sys, time
from pathlib import Path
import numpy as np
from zaugnet.io import tiff as io

def slow(target, data, **options):
    Path(target).write_bytes(b"II*\\x00" + bytes(1 << 20))
    print(target, flush=True)
    time.sleep(120)

io.tifffile.imwrite = slow
io.write_stack(sys.argv[1], np.zeros((3, 8, 8), np.uint8))
"""


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_killed_writer_temporary_is_removed_by_the_next_write(tmp_path: Path, signum: int) -> None:
    path = tmp_path / "out.tif"
    writer = subprocess.Popen([sys.executable, "-c", SLOW_WRITE, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert select.select([writer.stdout], [], [], 60)[0], "the writer did not start writing"
        temporary = Path(writer.stdout.readline().strip())
    finally:
        writer.send_signal(signum)
        writer.wait(timeout=60)
    assert writer.returncode == -signum
    assert temporary.name.startswith(atomic.temporary_prefix(path, writer.pid))
    assert listing(tmp_path) == [temporary.name]  # what the killed writer left
    write_stack(path, np.ones((3, 8, 8), np.uint8))
    assert listing(tmp_path) == ["out.tif"]
    np.testing.assert_array_equal(read_stack(path).data, np.ones((3, 8, 8), np.uint8))


def test_long_names_fit(tmp_path: Path) -> None:
    path = tmp_path / ("s" * 243 + ".ome.tif")  # 251 characters: the temporary name must fit NAME_MAX too
    write_stack(path, np.ones((3, 8, 8), np.uint8))
    assert listing(tmp_path) == [path.name]
    np.testing.assert_array_equal(read_stack(path).data, np.ones((3, 8, 8), np.uint8))
