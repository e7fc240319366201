"""``load_interpolator``: checkpoint, package zip / folder, URL (a real local HTTP server), model-zoo id, and the
refusals that keep packages from elsewhere from running code."""

from __future__ import annotations

import os
import shutil
import socket
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from support import edit_rdf, sha256_file, unpack
from zaugnet.export.load import from_checkpoint, load_interpolator, looks_like_zoo_id
from zaugnet.export.parity import TOLERANCE, relative_error

from zaugnet.errors import InputError
from zaugnet.gaps import context_indices
from zaugnet.predict.interpolator import ModelInterpolator

pytestmark = pytest.mark.bioimageio  # uses packages exported (and tested) with bioimageio.core


def _zip_folder(folder: Path, target: Path, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(target, "w") as zf:
        for path in sorted(folder.iterdir()):
            zf.write(path, path.name)
        for name, data in (extra or {}).items():
            info = zipfile.ZipInfo("placeholder")
            info.filename = name  # as given: ZipInfo() would tidy the name
            zf.writestr(info, data)
    return target



@pytest.fixture(scope="module")
def stack() -> np.ndarray:
    """A phantom bigger than one tile at tile=64 (so tiling with a shared pair range is exercised too)."""
    from zaugnet.phantoms import simulate_stack

    return simulate_stack((3, 90, 120), kind="membrane", seed=21).astype(np.float32)


def _window(model: ModelInterpolator, stack: np.ndarray) -> np.ndarray:
    """The model's input slices: slices 0 and 2, or ZAugNet-C's K slices around the gap (0, 1), edge repeated."""
    idx = [0, 2] if model.n_slices == 2 else list(context_indices(0, 1, model.n_slices, 0, len(stack)))
    return stack[None, idx]


def _predict(model: ModelInterpolator, stack: np.ndarray) -> np.ndarray:
    z = [0.3] if not model.midpoint_only else [0.5]
    return model.predict_windows(_window(model, stack), z)


def _close(got: np.ndarray, want: np.ndarray, stack: np.ndarray) -> float:
    err = relative_error(got[:, None], want[:, None], stack[None, [0, 2]])  # the span of slices 0 and 2 (all)
    assert err <= TOLERANCE, err
    return err


@pytest.mark.parametrize("variant", ["zaugnet", "zaugnet+", "zaugnet-c"])
def test_zip_folder_and_rdf_give_the_checkpoint_result(variant: str, packages, tiny_checkpoints, stack,
                                                       tmp_path: Path) -> None:
    want = _predict(from_checkpoint(str(tiny_checkpoints[variant])), stack)
    folder = unpack(packages[variant], tmp_path / "pkg")
    for spec in (packages[variant], folder, folder / "rdf.yaml"):
        model = load_interpolator(str(spec))
        assert isinstance(model, ModelInterpolator) and model.variant == variant
        assert model.n_slices == (4 if variant == "zaugnet-c" else 2)
        _close(_predict(model, stack), want, stack)
    for weight_format in ("pytorch_state_dict", "onnx"):
        _close(_predict(load_interpolator(str(packages[variant]), weight_format=weight_format), stack), want, stack)
    # tiled (tile 64 < 120 px): the package's student (by default its state dict) shares the pair's range across tiles
    tiled = {"tile": 64, "halo": 32}
    _close(_predict(load_interpolator(str(packages[variant]), **tiled), stack),
           _predict(from_checkpoint(str(tiny_checkpoints[variant]), **tiled), stack), stack)


def test_zaugnet_c_is_recognised_by_its_channels_without_the_zaugnet_config(packages, tiny_checkpoints, stack,
                                                                            tmp_path: Path) -> None:
    """A ZAugNet-C package whose rdf lost ``config.zaugnet`` still loads (K + 1 = 5 channels -> K = 4), with every
    weight format; channel counts that fit no variant are refused."""
    folder = unpack(packages["zaugnet-c"], tmp_path / "pkg")
    edit_rdf(folder, lambda rdf: rdf["config"].pop("zaugnet"))
    want = _predict(from_checkpoint(str(tiny_checkpoints["zaugnet-c"])), stack)
    for weight_format in ("torchscript", "pytorch_state_dict", "onnx"):
        model = load_interpolator(str(folder), weight_format=weight_format)
        assert (model.variant, model.n_slices, model.normalization) == ("zaugnet-c", 4, "none")
        _close(_predict(model, stack), want, stack)
    edit_rdf(folder, lambda rdf: rdf["inputs"][0]["axes"][1].update(channel_names=["a", "b", "c", "d"]))
    with pytest.raises(InputError, match="not a ZAugNet package"):
        load_interpolator(str(folder))
    edit_rdf(folder, lambda rdf: rdf["inputs"][0]["axes"][1].update(channel_names=list("abcdefg")))
    with pytest.raises(InputError, match="architecture kwargs"):  # 7 channels: K = 6, the weights have K = 4
        load_interpolator(str(folder), weight_format="pytorch_state_dict")


def test_checkpoint_spec_goes_to_the_training_loader(tiny_checkpoints, stack) -> None:
    model = load_interpolator(str(tiny_checkpoints["zaugnet"]), batch_size=2)
    assert model.normalization == "minmax" and model.batch_size == 2
    with pytest.raises(InputError, match="packages only"):
        load_interpolator(str(tiny_checkpoints["zaugnet"]), weight_format="onnx")


def test_url_of_a_package_on_a_local_http_server(packages, tiny_checkpoints, stack, http_root) -> None:
    folder, base = http_root
    shutil.copyfile(packages["zaugnet+"], folder / "zaugnet_plus.zip")
    model = load_interpolator(f"{base}/zaugnet_plus.zip")
    _close(_predict(model, stack), _predict(from_checkpoint(str(tiny_checkpoints["zaugnet+"])), stack), stack)
    with pytest.raises(InputError, match="404"):
        load_interpolator(f"{base}/missing.zip")


def test_zoo_id_resolves_through_bioimageio_spec(packages, tiny_checkpoints, stack, http_root,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """bioimageio.spec maps an id to ``collection_http_pattern`` (the zoo's server); here that pattern points
    at the local server, which holds the package laid out as the zoo serves it (``<id>/files/...``)."""
    from bioimageio.spec._internal._settings import settings

    folder, base = http_root
    unpack(packages["zaugnet"], folder / "zaugnet-tiny-test" / "files")
    monkeypatch.setattr(settings, "collection_http_pattern", f"{base}/{{bioimageio_id}}/files/rdf.yaml")
    assert looks_like_zoo_id("zaugnet-tiny-test")
    model = load_interpolator("zaugnet-tiny-test")
    _close(_predict(model, stack), _predict(from_checkpoint(str(tiny_checkpoints["zaugnet"])), stack), stack)
    with pytest.raises(InputError, match="model-zoo id"):
        load_interpolator("no-such-zaugnet-model")


def _zoo_reachable() -> bool:
    try:
        socket.create_connection(("hypha.aicell.io", 443), timeout=3).close()
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _zoo_reachable(), reason="the BioImage.IO model zoo (hypha.aicell.io) cannot be reached "
                                                 "from here (offline); the id path is tested against a local server")
def test_real_zoo_id_is_refused_cleanly_when_not_a_zaugnet_model() -> None:
    """Online only: a real zoo model (a U-Net, not ZAugNet) resolves, downloads, verifies, and is refused."""
    with pytest.raises(InputError, match="ZAugNet|channels|pre/postprocessing"):
        load_interpolator("affable-shark")


# ------------------------------------------------------------------------------------ refusals
@pytest.mark.parametrize("evil", ["../evil.txt", "/tmp/zaugnet_evil_abs.txt", "a/../../evil.txt"])
def test_zip_entry_escaping_the_package_is_refused(evil: str, packages, tmp_path: Path) -> None:
    folder = unpack(packages["zaugnet"], tmp_path / "pkg")
    bad = _zip_folder(folder, tmp_path / "bad.zip", extra={evil: b"owned"})
    with zipfile.ZipFile(bad) as zf:
        assert evil in zf.namelist()
    with pytest.raises(InputError, match="refused"):
        load_interpolator(str(bad))
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/zaugnet_evil_abs.txt").exists()


def test_altered_weights_are_refused(packages, tmp_path: Path) -> None:
    folder = unpack(packages["zaugnet"], tmp_path / "pkg")
    weights = folder / "zaugnet_torchscript.pt"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(InputError, match="sha256"):
        load_interpolator(str(folder))
    with pytest.raises(InputError, match="sha256"):
        load_interpolator(str(_zip_folder(folder, tmp_path / "altered.zip")))


class _Payload:
    """Unpickling this creates a file: the proof that a pickle ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (open, (str(self.marker), "w"))


def test_state_dict_pickle_that_would_run_code_is_refused(packages, tmp_path: Path) -> None:
    folder = unpack(packages["zaugnet"], tmp_path / "pkg")
    marker = tmp_path / "code_ran"
    torch.save({"student.blocks.0.conv0.0.0.weight": _Payload(marker)}, folder / "zaugnet_state_dict.pt")
    new_sha = sha256_file(folder / "zaugnet_state_dict.pt")  # an attacker controls the rdf as well
    edit_rdf(folder, lambda rdf: rdf["weights"]["pytorch_state_dict"].update(sha256=new_sha))
    with pytest.raises(InputError, match="refused"):
        load_interpolator(str(folder), weight_format="pytorch_state_dict")
    assert not marker.exists()
    # the same file where TorchScript is expected: torch.jit.load refuses it, nothing runs either
    shutil.copyfile(folder / "zaugnet_state_dict.pt", folder / "zaugnet_torchscript.pt")
    edit_rdf(folder, lambda rdf: rdf["weights"]["torchscript"].update(sha256=new_sha))
    with pytest.raises(InputError):
        load_interpolator(str(folder), weight_format="torchscript")
    assert not marker.exists()


def test_unknown_architecture_and_unverifiable_files_are_refused(packages, tmp_path: Path) -> None:
    folder = unpack(packages["zaugnet"], tmp_path / "pkg")
    original = (folder / "rdf.yaml").read_text()
    cases = [
        (lambda r: r["weights"]["pytorch_state_dict"]["architecture"].update(callable="evil"), "pytorch_state_dict",
         "unknown architecture"),
        (lambda r: r["weights"]["torchscript"].pop("sha256"), None, "no sha256"),
        (lambda r: r["weights"]["torchscript"].update(source="../zaugnet_torchscript.pt"), None, "outside"),
        (lambda r: r["weights"]["torchscript"].update(source="https://example.com/w.pt"), None, "inside the package"),
        (lambda r: r["inputs"][0].update(preprocessing=[{"id": "scale_range", "kwargs": {}}]), None,
         "pre/postprocessing"),
    ]
    for edit, weight_format, message in cases:
        (folder / "rdf.yaml").write_text(original)
        edit_rdf(folder, edit)
        with pytest.raises(InputError, match=message):
            load_interpolator(str(folder), weight_format=weight_format)


def test_specs_that_are_nothing_are_refused(tmp_path: Path) -> None:
    for spec in (tmp_path / "missing.pt", tmp_path / "missing.zip", "./not/here"):
        with pytest.raises(InputError, match="not found"):
            load_interpolator(str(spec))
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="not a checkpoint"):
        load_interpolator(str(tmp_path / "notes.txt"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="rdf.yaml"):
        load_interpolator(str(tmp_path / "empty"))
    assert os.listdir(tmp_path / "empty") == []
