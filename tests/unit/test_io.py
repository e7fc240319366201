"""Tests of zaugnet.io.tiff: reading, writing and finding microscopy stacks."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import tifffile

from zaugnet.errors import InputError
from zaugnet.io import tiff as io
from zaugnet.io.tiff import (
    Stack,
    VoxelSize,
    find_stacks,
    iter_volumes,
    read_stack,
    write_stack,
)
from zaugnet.io.units import normalise_unit

SHAPES = {
    "ZYX": (5, 12, 10),
    "TZYX": (2, 4, 12, 10),
    "ZCYX": (4, 3, 12, 10),
    "TZCYX": (2, 3, 2, 12, 10),
}


def random_data(shape: tuple[int, ...], dtype: type, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.normal(100.0, 30.0, shape).astype(dtype)
    return rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True, dtype=dtype)


def assert_voxel_close(actual: VoxelSize, expected: VoxelSize, rel: float = 1e-6) -> None:
    assert actual.unit == expected.unit
    for axis in "zyx":
        want = getattr(expected, axis)
        got = getattr(actual, axis)
        assert got == (None if want is None else pytest.approx(want, rel=rel)), axis


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".tif", ".ome.tif"])
@pytest.mark.parametrize("axes", list(SHAPES))
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_round_trip(tmp_path: Path, suffix: str, axes: str, dtype: type) -> None:
    data = random_data(SHAPES[axes], dtype)
    voxel = VoxelSize(z=0.7, y=0.1234567, x=0.0987654)
    path = write_stack(tmp_path / f"stack{suffix}", data, axes, voxel)
    assert path == tmp_path / f"stack{suffix}"

    stack = read_stack(path)
    assert stack.axes == axes
    assert stack.data.dtype == dtype
    assert stack.data.shape == data.shape
    assert stack.data.tobytes() == data.tobytes()
    assert_voxel_close(stack.voxel_size, voxel)
    assert stack.path == path


@pytest.mark.parametrize("suffix", [".tif", ".tiff", ".ome.tif", ".OME.TIFF"])
@pytest.mark.parametrize(
    "voxel",
    [
        VoxelSize(),
        VoxelSize(z=2.0),
        VoxelSize(z=5.0, y=2.0, x=2.0),
        VoxelSize(z=0.3, y=40.0, x=40.0, unit="nm"),
    ],
)
def test_round_trip_voxel_sizes(tmp_path: Path, suffix: str, voxel: VoxelSize) -> None:
    data = random_data((3, 8, 8), np.uint16)
    stack = read_stack(write_stack(tmp_path / f"v{suffix}", Stack(data, "ZYX", voxel)))
    assert_voxel_close(stack.voxel_size, voxel)


def test_write_transposes_to_canonical_order(tmp_path: Path) -> None:
    data = random_data((3, 5, 8, 6), np.uint16)  # CZYX
    stack = read_stack(write_stack(tmp_path / "czyx.tif", data, "czyx"))
    assert stack.axes == "ZCYX"
    np.testing.assert_array_equal(stack.data, data.transpose(1, 0, 2, 3))


def test_write_accepts_stack_and_micron_spellings(tmp_path: Path) -> None:
    data = random_data((4, 8, 8), np.float32)
    voxel = VoxelSize(z=1.5, y=0.25, x=0.25, unit="\u00b5m")
    for i, suffix in enumerate([".tif", ".ome.tif"]):
        stack = read_stack(write_stack(tmp_path / f"s{i}{suffix}", Stack(data, "ZYX", voxel)))
        assert_voxel_close(stack.voxel_size, VoxelSize(z=1.5, y=0.25, x=0.25))


# --- reading files written by others -------------------------------------------------------


@pytest.mark.parametrize("unit", ["micron", "\\u00B5m", "microns", "um", None])
def test_read_imagej_metadata_written_by_tifffile(tmp_path: Path, unit: str | None) -> None:
    path = tmp_path / "ij.tif"
    data = random_data((6, 10, 9), np.uint16)
    metadata = {"spacing": 0.5, "axes": "ZYX"} | ({} if unit is None else {"unit": unit})
    tifffile.imwrite(path, data, imagej=True, resolution=(1 / 0.2, 1 / 0.2), metadata=metadata)
    stack = read_stack(path)
    assert stack.axes == "ZYX"
    np.testing.assert_array_equal(stack.data, data)
    assert_voxel_close(stack.voxel_size, VoxelSize(z=0.5, y=0.2, x=0.2, unit="um"))


@pytest.mark.parametrize("unit", ["micron", "Microns", "\u00b5m", "\u03bcm", "\\u00B5m", "\\u00b5m", " um "])
def test_micron_spellings_normalised(unit: str) -> None:
    assert normalise_unit(unit) == "um"


def test_read_uncalibrated_imagej(tmp_path: Path) -> None:
    path = tmp_path / "uncalibrated.tif"
    tifffile.imwrite(path, random_data((3, 8, 8), np.uint8), imagej=True, metadata={"axes": "ZYX"})
    assert read_stack(path).voxel_size == VoxelSize()
    tifffile.imwrite(path, random_data((3, 8, 8), np.uint8), imagej=True, resolution=(2.0, 2.0),
                     metadata={"axes": "ZYX", "spacing": 3.0, "unit": "pixel"})
    assert read_stack(path).voxel_size == VoxelSize()


def test_read_resolution_in_centimetres(tmp_path: Path) -> None:
    path = tmp_path / "cm.tif"
    tifffile.imwrite(
        path,
        random_data((3, 8, 8), np.uint8),
        imagej=True,
        resolution=(1e4 / 0.5, 1e4 / 0.25),  # pixels per cm
        resolutionunit="CENTIMETER",
        metadata={"spacing": 2.0, "unit": "um", "axes": "ZYX"},
    )
    assert_voxel_close(read_stack(path).voxel_size, VoxelSize(z=2.0, y=0.25, x=0.5))


def test_read_plain_tiff_without_metadata(tmp_path: Path) -> None:
    path = tmp_path / "plain.tif"
    data = random_data((7, 11, 13), np.uint16)
    tifffile.imwrite(path, data)
    stack = read_stack(path)
    assert stack.axes == "ZYX"
    np.testing.assert_array_equal(stack.data, data)
    assert stack.voxel_size == VoxelSize()


def test_read_ome_in_other_axis_order(tmp_path: Path) -> None:
    path = tmp_path / "czyx.ome.tif"
    data = random_data((2, 5, 8, 6), np.uint16)
    tifffile.imwrite(
        path, data, ome=True, metadata={"axes": "CZYX", "PhysicalSizeZ": 300.0, "PhysicalSizeZUnit": "nm",
                                        "PhysicalSizeX": 0.1, "PhysicalSizeY": 0.1}
    )
    stack = read_stack(path)
    assert stack.axes == "ZCYX"
    np.testing.assert_array_equal(stack.data, data.transpose(1, 0, 2, 3))
    assert_voxel_close(stack.voxel_size, VoxelSize(z=0.3, y=0.1, x=0.1))  # mixed units -> um


def test_axes_override(tmp_path: Path) -> None:
    path = tmp_path / "shaped.tif"
    data = random_data((2, 4, 8, 8), np.uint8)
    tifffile.imwrite(path, data, photometric="minisblack")  # tifffile says "QQYX"
    with pytest.raises(InputError, match="pass axes"):
        read_stack(path)
    stack = read_stack(path, axes="CZYX")
    assert stack.axes == "ZCYX"
    np.testing.assert_array_equal(stack.data, data.transpose(1, 0, 2, 3))
    assert read_stack(path, axes="tzyx").axes == "TZYX"
    for bad in ["ZYX", "ZZYX", "ABYX", "TCYX"]:
        with pytest.raises(InputError, match="shaped.tif"):
            read_stack(path, axes=bad)


def test_imagej_channels_only_file_needs_axes(tmp_path: Path) -> None:
    path = tmp_path / "channels.tif"
    data = random_data((5, 8, 8), np.uint16)
    tifffile.imwrite(path, data, imagej=True)  # without axes tifffile stores CYX
    with pytest.raises(InputError, match="no z axis"):
        read_stack(path)
    np.testing.assert_array_equal(read_stack(path, axes="ZYX").data, data)


def test_rgb_with_axes_override(tmp_path: Path) -> None:
    path = tmp_path / "rgb.tif"
    data = random_data((4, 16, 16, 3), np.uint8)
    tifffile.imwrite(path, data, photometric="rgb")
    stack = read_stack(path, axes="ZYXC")
    assert stack.axes == "ZCYX"
    np.testing.assert_array_equal(stack.data, data.transpose(0, 3, 1, 2))


@pytest.mark.parametrize("dtype", [np.int16, np.float64])
def test_read_accepts_int16_and_float64(tmp_path: Path, dtype: type) -> None:
    path = tmp_path / "other.tif"
    data = random_data((3, 8, 8), dtype)
    tifffile.imwrite(path, data, photometric="minisblack")
    stack = read_stack(path)
    assert stack.data.dtype == dtype
    np.testing.assert_array_equal(stack.data, data)


@pytest.mark.parametrize("suffix", [".tif", ".ome.tif"])
def test_mmap(tmp_path: Path, suffix: str) -> None:
    data = random_data((2, 5, 3, 8, 8), np.float32)
    path = write_stack(tmp_path / f"m{suffix}", data, "TZCYX")
    stack = read_stack(path, mmap=True)
    assert isinstance(stack.data, np.memmap)
    np.testing.assert_array_equal(stack.data, data)
    with pytest.raises(ValueError, match="read-only"):
        stack.data[0, 0, 0, 0, 0] = 1


@pytest.mark.parametrize("mmap", [False, True])
def test_big_endian_is_returned_in_native_byte_order(tmp_path: Path, mmap: bool) -> None:
    path = tmp_path / "big.tif"
    data = random_data((4, 8, 8), np.uint16)
    tifffile.imwrite(path, data, byteorder=">", photometric="minisblack")
    stack = read_stack(path, mmap=mmap)
    assert stack.data.dtype.isnative
    np.testing.assert_array_equal(stack.data, data)


@pytest.mark.parametrize("slices", [3, 4])
def test_planar_rgb_needs_axes(tmp_path: Path, slices: int) -> None:
    # tifffile 2026.3 still stores (3|4, Y, X) data like this unless given photometric="minisblack"
    path = tmp_path / "few.tif"
    data = random_data((slices, 8, 8), np.uint16)
    tifffile.imwrite(path, data, photometric="rgb", planarconfig="separate")
    with pytest.raises(InputError, match="RGB"):
        read_stack(path)
    np.testing.assert_array_equal(read_stack(path, axes="ZYX").data, data)


def test_mmap_falls_back_for_compressed_files(tmp_path: Path) -> None:
    path = tmp_path / "zlib.tif"
    data = random_data((4, 8, 8), np.uint16)
    tifffile.imwrite(path, data, compression="zlib", photometric="minisblack")
    stack = read_stack(path, mmap=True)
    assert not isinstance(stack.data, np.memmap)
    np.testing.assert_array_equal(stack.data, data)


def test_mmap_detects_nan(tmp_path: Path) -> None:
    data = random_data((4, 8, 8), np.float32)
    data[3, 2, 1] = np.inf
    path = write_stack(tmp_path / "inf.tif", data)
    with pytest.raises(InputError, match="NaN or infinite"):
        read_stack(path, mmap=True)


def test_reading_leaves_file_unchanged(tmp_path: Path) -> None:
    path = write_stack(tmp_path / "keep.tif", random_data((4, 8, 8), np.float32), voxel_size=VoxelSize(z=1.0))
    before, mtime = digest(path), path.stat().st_mtime_ns
    for mmap in (False, True):
        stack = read_stack(path, mmap=mmap)
        del stack
    assert digest(path) == before
    assert path.stat().st_mtime_ns == mtime


# --- bad input -----------------------------------------------------------------------------


def write_2d(path: Path) -> None:
    tifffile.imwrite(path, random_data((16, 16), np.uint16))


def write_two_slices(path: Path) -> None:
    write_stack(path, random_data((2, 16, 16), np.uint16))


def write_rgb(path: Path) -> None:
    tifffile.imwrite(path, random_data((4, 16, 16, 3), np.uint8), photometric="rgb")


def write_text(path: Path) -> None:
    path.write_text("this is not an image\n")


def write_truncated_imagej(path: Path) -> None:
    write_stack(path, random_data((10, 32, 32), np.uint16))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def write_truncated_plain(path: Path) -> None:
    tifffile.imwrite(path, random_data((10, 32, 32), np.uint16))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def write_nan(path: Path) -> None:
    data = random_data((4, 8, 8), np.float32)
    data[2, 3, 4] = np.nan
    write_stack(path, data)


def write_int32(path: Path) -> None:
    tifffile.imwrite(path, random_data((4, 8, 8), np.int32), photometric="minisblack")


def write_complex(path: Path) -> None:
    tifffile.imwrite(path, np.zeros((4, 8, 8), np.complex64), photometric="minisblack")


def write_unknown_4d(path: Path) -> None:
    tifffile.imwrite(path, random_data((3, 4, 8, 8), np.uint8), photometric="minisblack")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (write_2d, "a 2D image, not a z-stack"),
        (write_two_slices, "has 2 z-slice(s); at least 3 are needed"),
        (write_rgb, "RGB/multi-sample images are not supported"),
        (write_text, "not a readable TIFF file"),
        (write_truncated_imagej, "not a readable TIFF file"),
        (write_truncated_plain, "not a readable TIFF file"),
        (write_nan, "contains NaN or infinite values"),
        (write_int32, "int32; supported: uint8, uint16, int16, float32, float64"),
        (write_complex, "unsupported data type complex64"),
        (write_unknown_4d, "pass axes, e.g. 'TZYX' or 'ZCYX'"),
    ],
)
@pytest.mark.parametrize("mmap", [False, True])
def test_bad_input(tmp_path: Path, make, message: str, mmap: bool) -> None:
    path = tmp_path / "x.tif"
    make(path)
    with pytest.raises(InputError) as info:
        read_stack(path, mmap=mmap)
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="missing.tif: file does not exist"):
        read_stack(tmp_path / "missing.tif")


@pytest.mark.parametrize(
    ("name", "data", "axes", "message"),
    [
        ("out.png", random_data((3, 8, 8), np.uint8), None, "must end with .tif"),
        ("out.tif", random_data((3, 8, 8), np.int32), None, "unsupported data type int32"),
        ("out.tif", random_data((3, 8, 8), np.float64), None, "unsupported data type float64"),
        ("out.tif", random_data((2, 3, 8, 8), np.uint8), None, "axes must be given"),
        ("out.tif", random_data((2, 3, 8, 8), np.uint8), "CYX", "have 3 letters"),
        ("out.tif", random_data((2, 3, 8, 8), np.uint8), "TCYX", "invalid axes"),
    ],
)
def test_write_rejects_bad_input(
    tmp_path: Path, name: str, data: np.ndarray, axes: str | None, message: str
) -> None:
    with pytest.raises(InputError, match=message) as info:
        write_stack(tmp_path / name, data, axes)
    assert name in str(info.value)
    assert list(tmp_path.iterdir()) == []


# --- writing safely ------------------------------------------------------------------------


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    path = write_stack(tmp_path / "a.tif", random_data((3, 8, 8), np.uint8))
    before = digest(path)
    with pytest.raises(InputError, match="a.tif: exists; pass --overwrite to replace it"):
        write_stack(path, random_data((3, 8, 8), np.uint8, seed=1))
    assert digest(path) == before
    new = random_data((4, 8, 8), np.uint8, seed=2)
    write_stack(path, new, overwrite=True)
    np.testing.assert_array_equal(read_stack(path).data, new)


def test_creates_parent_directories(tmp_path: Path) -> None:
    path = write_stack(tmp_path / "a" / "b" / "c.ome.tif", random_data((3, 8, 8), np.uint8))
    assert path.is_file()
    assert sorted(p.name for p in path.parent.iterdir()) == ["c.ome.tif"]


@pytest.mark.parametrize("existing", [False, True])
def test_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existing: bool) -> None:
    path = tmp_path / "out.tif"
    if existing:
        write_stack(path, random_data((3, 8, 8), np.uint8))
    before = sorted(p.name for p in tmp_path.iterdir())
    original = digest(path) if existing else None

    def fail_midway(target, data, **kwargs) -> None:
        Path(target).write_bytes(b"II*\x00" + b"\x00" * 1000)
        raise OSError("disk full")

    monkeypatch.setattr(io.tifffile, "imwrite", fail_midway)
    with pytest.raises(OSError, match="disk full"):
        write_stack(path, random_data((3, 8, 8), np.uint8, seed=1), overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    if existing:
        assert digest(path) == original


# --- iter_volumes and find_stacks ----------------------------------------------------------


def test_iter_volumes() -> None:
    zyx = random_data((3, 4, 5), np.uint8)
    volumes = list(iter_volumes(Stack(zyx, "ZYX", VoxelSize())))
    assert [(label, v.shape) for label, v in volumes] == [("", (3, 4, 5))]

    data = random_data((2, 3, 2, 4, 5), np.uint16)
    volumes = list(iter_volumes(Stack(data, "TZCYX", VoxelSize())))
    assert [label for label, _ in volumes] == ["t0_c0", "t0_c1", "t1_c0", "t1_c1"]
    for label, volume in volumes:
        t, c = int(label[1]), int(label[-1])
        assert np.shares_memory(volume, data)
        np.testing.assert_array_equal(volume, data[t, :, c])

    labels = [label for label, _ in iter_volumes(Stack(data[:, :, 0], "TZYX", VoxelSize()))]
    assert labels == ["t0", "t1"]
    labels = [label for label, _ in iter_volumes(Stack(data[0], "ZCYX", VoxelSize()))]
    assert labels == ["c0", "c1"]


def test_find_stacks(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ["b.TIF", "a.tif", "c.tiff", "notes.txt", ".hidden.tif"]:
        (folder / name).write_bytes(b"")
    (folder / "sub").mkdir()
    (folder / "sub" / "d.tif").write_bytes(b"")
    single = tmp_path / "single.tif"
    single.write_bytes(b"")

    found = find_stacks([single, str(folder), folder / "a.tif"])
    assert found == [single, folder / "a.tif", folder / "b.TIF", folder / "c.tiff"]


def test_find_stacks_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images")
    with pytest.raises(InputError, match="empty: contains no .tif/.tiff files"):
        find_stacks([empty])
    with pytest.raises(InputError, match="nothing.tif: file does not exist"):
        find_stacks([tmp_path / "nothing.tif"])
    with pytest.raises(InputError):
        find_stacks([])


# --- real data -----------------------------------------------------------------------------

REAL_DATA = {
    "neubias_dna_conf_wf.tif": ((45, 2, 130, 133), "ZCYX", VoxelSize(z=0.499, y=0.512, x=0.512)),
    "neubias_chromosomes.tif": ((40, 152, 126), "ZYX", VoxelSize(z=0.15, y=0.0339, x=0.0339)),
    "deconwolf_dapi_001.tif": ((40, 201, 101), "ZYX", VoxelSize()),
    "mitograph_yeast_mito_test001.tif": ((41, 192, 192), "ZYX", VoxelSize()),
    "cellfinder_mousebrain_ch0_crop.tif": ((30, 256, 256), "ZYX", VoxelSize(z=5.0, y=2.0, x=2.0)),
}


#: The 8-bit stacks among ../shared/data (the rest are 16-bit).
UINT8_DATA = ("bian_Bead_Image1_crop.tif", "spindle3d_ZeissLSM_40x_CowZygote_01_c0.tif")


def test_shared_data(shared_data: Path) -> None:
    files = sorted(shared_data.glob("*.tif"))
    assert files
    for path in files:
        before = path.stat().st_mtime_ns
        stack = read_stack(path, mmap=True)
        assert stack.data.dtype == (np.uint8 if path.name in UINT8_DATA else np.uint16), path.name
        assert stack.data.dtype.isnative
        assert stack.data.ndim == len(stack.axes)
        if path.name in REAL_DATA:
            shape, axes, voxel = REAL_DATA[path.name]
            assert stack.data.shape == shape, path.name
            assert stack.axes == axes, path.name
            for axis in "zyx":
                want = getattr(voxel, axis)
                got = getattr(stack.voxel_size, axis)
                assert got == (None if want is None else pytest.approx(want, abs=1e-2)), (path.name, axis)
            assert stack.voxel_size.unit == "um"
        assert path.stat().st_mtime_ns == before
