"""One loader for ``zaugnet predict --model``: checkpoint, package (zip or folder), URL or model-zoo id.

Everything but a training checkpoint is a BioImage.IO package, and packages come from elsewhere, so:

- zip entries are checked before anything is unpacked (no ``..``, no absolute paths, no links, size caps);
- every file the rdf lists must lie inside the package, exist, and match its ``sha256``; the weights used
  must declare one;
- nothing in a package is unpickled as an arbitrary object or executed: TorchScript weights are read with
  ``torch.jit.load``, ONNX with onnxruntime, a ``pytorch_state_dict`` with ``torch.load(weights_only=True)``
  into zaugnet's OWN networks (the package's architecture file is never imported);
- packages with pre- or postprocessing steps are refused (ZAugNet packages normalise inside the network).

Packages run their TorchScript weights by default. For ZAugNet's own packages the scripted student inside
the wrapper is used with the normalisation recorded in the rdf, applied once per pair by
:class:`~zaugnet.training.predict.ModelInterpolator` (so tiles of a large slice share one intensity
range, exactly as with the checkpoint); other networks run whole with ``normalization="none"``.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urljoin, urlparse

import numpy as np
import torch
import yaml

from zaugnet.training.errors import InputError
from zaugnet.training.predict import ModelInterpolator, from_checkpoint

from .architecture import CALLABLE
from .safezip import _safe_member, extract_zip

#: Weight formats tried, in order, when none is asked for.
WEIGHT_PRIORITY = ("torchscript", "pytorch_state_dict", "onnx")
RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
#: Largest download accepted (bytes).
MAX_DOWNLOAD = 4 * 1024**3
HTTP_TIMEOUT = 60.0
#: Bounds on a package's architecture kwargs (the paper network: widths <= 240, depth 8).
MAX_WIDTH, MAX_DEPTH = 4096, 64
_ZOO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9._-]+){0,3}$")
#: The packages shipped in the repository (``bioimageio_models/`` beside ``export/``).
SHIPPED_MODELS = Path(__file__).resolve().parents[1] / "bioimageio_models"
#: The shipped package ``zaugnet predict`` uses when no ``--model`` is given.
DEFAULT_MODEL = "zaugnet"


def default_model() -> Path:
    """The shipped default model's package folder.

    Raises
    ------
    InputError
        If it is not there (an installation without the repository's ``bioimageio_models/``).
    """
    path = SHIPPED_MODELS / DEFAULT_MODEL
    if not (path / "rdf.yaml").is_file():
        raise InputError("--model", f"no model given, and the shipped default ({path}) is not there; pass --model "
                                    "(a checkpoint, a package, a URL or a model-zoo id) or --method cubic")
    return path


# ------------------------------------------------------------------------------------ files
def sha256_of(path: Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _file_refs(node: Any, where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every ``{source: ..., (sha256: ...)}`` mapping in the rdf (files), with its location."""
    if isinstance(node, dict):
        if isinstance(node.get("source"), str):
            yield where or "rdf", node
        for key, value in node.items():
            if key not in ("config", "kwargs"):  # free-form values, not file references
                yield from _file_refs(value, f"{where}.{key}" if where else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _file_refs(value, f"{where}[{i}]")


def _relative_source(source: str, where: str, package: str) -> PurePosixPath:
    """A file reference as a path inside the package; InputError for URLs, absolute paths and ``..``."""
    if urlparse(source).scheme or source.startswith("/") or "\\" in source:
        raise InputError(package, f"{where}: source {source!r} is not a file inside the package")
    path = PurePosixPath(source)
    if any(part in ("..", "") for part in path.parts) or not path.parts:
        raise InputError(package, f"{where}: source {source!r} points outside the package")
    return path


def verify_package_files(folder: Path, rdf: dict[str, Any], name: str) -> None:
    """Check every file the rdf lists: inside ``folder``, present, and matching its sha256 when given.

    Weights entries (and an architecture file) must declare a sha256.
    """
    root = folder.resolve()
    for where, ref in _file_refs(rdf):
        rel = _relative_source(ref["source"], where, name)
        path = (root / rel).resolve()
        if not path.is_relative_to(root):
            raise InputError(name, f"{where}: {ref['source']!r} resolves outside the package")
        if not path.is_file():
            raise InputError(name, f"{where}: file {ref['source']!r} is missing")
        expected = ref.get("sha256")
        if expected is None:
            if where.startswith("weights."):
                raise InputError(name, f"{where}: {ref['source']!r} has no sha256 in the rdf; refusing weights "
                                       "that cannot be verified")
            continue
        actual = sha256_of(path)
        if actual != str(expected).lower():
            raise InputError(name, f"{where}: {ref['source']!r} does not match the sha256 in the rdf "
                                   f"(expected {expected}, got {actual}); the package was altered or damaged")


def _read_rdf(folder: Path, name: str) -> tuple[dict[str, Any], Path]:
    for candidate in RDF_NAMES:
        path = folder / candidate
        if path.is_file():
            try:
                rdf = yaml.safe_load(path.read_text(encoding="utf-8"))
            except (yaml.YAMLError, UnicodeDecodeError) as err:
                raise InputError(name, f"{candidate} is not readable YAML ({err.__class__.__name__})") from None
            if not isinstance(rdf, dict) or rdf.get("type") != "model":
                raise InputError(name, f"{candidate} does not describe a model (type: model)")
            return rdf, path
    raise InputError(name, f"no {' or '.join(RDF_NAMES)} found: not a BioImage.IO package")


# ------------------------------------------------------------------------------------ packages
def _variant(rdf: dict[str, Any], name: str) -> tuple[str, int, dict[str, Any]]:
    """The package's variant (from config.zaugnet, else the number of input channels: 2 -> ZAugNet, 3 -> ZAugNet+,
    K + 1 >= 5 -> ZAugNet-C), its image channels per gap (2, or ZAugNet-C's K) and its zaugnet config."""
    inputs, outputs = rdf.get("inputs") or [], rdf.get("outputs") or []
    if len(inputs) != 1 or len(outputs) != 1:
        raise InputError(name, f"expected one input and one output tensor, got {len(inputs)} and {len(outputs)}")
    for tensor in (*inputs, *outputs):
        steps = [p for key in ("preprocessing", "postprocessing") for p in tensor.get(key) or []
                 if not (p.get("id") == "ensure_dtype" and (p.get("kwargs") or {}).get("dtype") == "float32")]
        if steps:
            raise InputError(name, f"tensor {tensor.get('id')!r} declares pre/postprocessing "
                                   f"({', '.join(str(p.get('id')) for p in steps)}), which zaugnet does not run; "
                                   "ZAugNet packages normalise inside the network")
    channels = next((a.get("channel_names") for a in inputs[0].get("axes") or []
                     if isinstance(a, dict) and a.get("type") == "channel"), None)
    zconfig = ((rdf.get("config") or {}).get("zaugnet") or {})
    if not isinstance(zconfig, dict):
        zconfig = {}
    variant = zconfig.get("variant")
    n_channels = len(channels) if isinstance(channels, list) else None
    if variant is None and n_channels is not None:
        variant = {2: "zaugnet", 3: "zaugnet+"}.get(n_channels, "zaugnet-c" if n_channels >= 5 else None)
    expected = {"zaugnet": 2, "zaugnet+": 3}.get(variant) if isinstance(variant, str) else None
    if variant == "zaugnet-c":
        if n_channels is None or n_channels < 5 or n_channels % 2 == 0:
            raise InputError(name, f"a ZAugNet-C package needs an even number K >= 4 of slices and the DPM as input "
                                   f"channels, got {n_channels if n_channels is not None else 'no channel names'}")
        expected = n_channels
    if expected is None:
        raise InputError(name, "not a ZAugNet package: the input must have 2 channels [slice_0, slice_1], "
                               "3 [slice_0, slice_1, dpm] or K + 1 [K slices, dpm] (ZAugNet-C)")
    if n_channels is not None and n_channels != expected:
        raise InputError(name, f"a {variant} package needs {expected} input channels, the rdf names {n_channels}")
    return variant, (expected - 1 if variant == "zaugnet-c" else 2), zconfig


def _outer_normalization(zconfig: dict[str, Any]) -> tuple[str, tuple[float, float]] | None:
    norm = zconfig.get("normalization")
    if not isinstance(norm, dict) or norm.get("mode") not in ("minmax", "percentile"):
        return None
    lo, hi = (float(p) for p in norm.get("percentiles") or (0.1, 99.9))
    return str(norm["mode"]), (lo, hi)


def _state_dict_network(entry: dict[str, Any], weights: Path, name: str, variant: str,
                        device: str, n_slices: int = 2) -> torch.nn.Module:
    """zaugnet's own network for a ``pytorch_state_dict`` entry; weights read with ``weights_only=True``."""
    from zaugnet.training.config import NetConfig
    from zaugnet.training.nets import build_student

    from .wrapper import NormalizedStudent

    arch = entry.get("architecture") or {}
    if arch.get("callable") != CALLABLE:
        raise InputError(name, f"pytorch_state_dict: architecture {arch.get('callable')!r} is not zaugnet's "
                               f"{CALLABLE!r}; refusing to run an unknown architecture file")
    kwargs = dict(arch.get("kwargs") or {})
    try:
        context = {"context_slices": kwargs.get("context_slices", 4), "head_width": kwargs.get("head_width", 16)}
        net = NetConfig(variant=kwargs.get("variant"), block_widths=kwargs.get("block_widths"),
                        trunk_depth=kwargs.get("trunk_depth"), context_width=kwargs.get("context_width"),
                        unet_width=kwargs.get("unet_width"), **context)
        lo, hi = (float(q) for q in kwargs.get("percentiles") or (0.1, 99.9))
        if net.variant != variant or net.n_slices != n_slices \
                or max(*net.block_widths, net.context_width, net.unet_width, net.head_width) > MAX_WIDTH \
                or net.trunk_depth > MAX_DEPTH or not 0 <= lo < hi <= 100:
            raise ValueError(f"variant {net.variant} with {net.n_slices} slices (package: {variant}, {n_slices}), "
                             f"widths <= {MAX_WIDTH}, depth <= {MAX_DEPTH} and 0 <= percentiles <= 100 expected")
        network = NormalizedStudent(build_student(net).eval(), net.with_dpm, kwargs.get("normalization", "minmax"),
                                    (lo, hi), net.n_slices)
    except (ValueError, TypeError) as err:
        raise InputError(name, f"pytorch_state_dict: architecture kwargs are not valid ({err})") from None
    try:
        state = torch.load(weights, map_location=device, weights_only=True)
    except Exception as err:  # noqa: BLE001 - UnpicklingError and friends: refuse
        raise InputError(weights.name, "refused to load pytorch_state_dict weights: they hold objects other than "
                                       f"tensors ({err.__class__.__name__})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(weights.name, "pytorch_state_dict weights are not a plain state dict of tensors")
    try:
        network.load_state_dict(state)
    except RuntimeError as err:
        raise InputError(weights.name, f"weights do not match the architecture kwargs ({err})") from None
    return network.to(device).eval()


class _OnnxNetwork:
    """An onnxruntime session as a torch callable (CPU)."""

    def __init__(self, path: Path) -> None:
        from .onnx import onnx_session

        self.session = onnx_session(path)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        from .onnx import run_onnx

        return torch.from_numpy(run_onnx(self.session, x.detach().cpu().numpy().astype(np.float32)))


def interpolator_from_package(folder: str | Path, *, device: str = "cpu", weight_format: str | None = None,
                              name: str | None = None, **options: Any) -> ModelInterpolator:
    """A :class:`ModelInterpolator` from an unpacked package folder (files verified first)."""
    from .torchscript import load_torchscript

    folder = Path(folder)
    label = name or str(folder)
    rdf, _ = _read_rdf(folder, label)
    verify_package_files(folder, rdf, label)
    variant, n_slices, zconfig = _variant(rdf, label)
    weights = rdf.get("weights") or {}
    if weight_format is not None and weight_format not in WEIGHT_PRIORITY:
        raise InputError("weight_format", f"choose from {', '.join(WEIGHT_PRIORITY)}, got {weight_format!r}")
    formats = [weight_format] if weight_format else [f for f in WEIGHT_PRIORITY if f in weights]
    if not formats or formats[0] not in weights:
        raise InputError(label, f"no {weight_format or ' / '.join(WEIGHT_PRIORITY)} weights in the package")
    chosen = formats[0]
    entry = weights[chosen]
    path = folder / _relative_source(entry["source"], f"weights.{chosen}", label)
    outer = _outer_normalization(zconfig)
    network: torch.nn.Module | Callable[[torch.Tensor], torch.Tensor]
    if chosen == "onnx":
        if device != "cpu":
            raise InputError("--device", "ONNX weights run on the CPU here (onnxruntime CPU provider)")
        network, outer = _OnnxNetwork(path), None
    else:
        network = (load_torchscript(path, device) if chosen == "torchscript"
                   else _state_dict_network(entry, path, label, variant, device, n_slices))
        inner = getattr(network, "student", None)
        if outer is not None and isinstance(inner, torch.nn.Module):
            network = inner  # normalise outside, once per pair (tiles share the pair's range)
        else:
            outer = None
    mode, percentiles = outer if outer else ("none", (0.1, 99.9))
    return ModelInterpolator(network, variant, device=device, normalization=mode, percentiles=percentiles,
                             n_slices=n_slices, **options)


# ------------------------------------------------------------------------------------ remote
def _download(url: str, dest: Path, max_bytes: int = MAX_DOWNLOAD) -> Path:
    """Stream ``url`` to the new file ``dest`` (http/https only, size-capped)."""
    import httpx

    if urlparse(url).scheme not in ("http", "https"):
        raise InputError(url, "only http and https URLs can be downloaded")
    size = 0
    try:
        with httpx.stream("GET", url, follow_redirects=True, timeout=HTTP_TIMEOUT) as response:
            if response.status_code != 200:
                raise InputError(url, f"download failed: HTTP {response.status_code} {response.reason_phrase}")
            with open(dest, "xb") as f:
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > max_bytes:
                        raise InputError(url, f"download refused: larger than {max_bytes} bytes")
                    f.write(chunk)
    except httpx.HTTPError as err:
        raise InputError(url, f"download failed ({err.__class__.__name__}: {err})") from None
    return dest


def _mirror_remote(rdf_text: str, base_url: str, target: Path, label: str) -> Path:
    """Write the rdf and download every file it lists (relative to ``base_url``) into ``target``."""
    try:
        rdf = yaml.safe_load(rdf_text)
    except yaml.YAMLError as err:
        raise InputError(label, f"the rdf is not readable YAML ({err.__class__.__name__})") from None
    if not isinstance(rdf, dict):
        raise InputError(label, "the rdf is not a mapping")
    target.mkdir(parents=True)
    (target / "rdf.yaml").write_text(rdf_text, encoding="utf-8")
    base = base_url if base_url.endswith("/") else base_url + "/"
    for where, ref in _file_refs(rdf):
        rel = _relative_source(ref["source"], where, label)
        dest = target / rel
        if dest.exists():
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        _download(urljoin(base, str(rel)), dest)
    return target


def _unpack_zip_object(zf: zipfile.ZipFile, target: Path, label: str) -> Path:
    """Unpack an already opened zip (a package bioimageio.spec fetched) with the same checks as files."""
    target.mkdir(parents=True)
    for info in zf.infolist():
        member = _safe_member(info, Path(label))
        if member is None:
            continue
        dest = target / member
        dest.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(info) as src, open(dest, "xb") as dst:
            shutil.copyfileobj(src, dst)
    return target


def _resolve_zoo_id(model_id: str, target: Path) -> Path:
    """Fetch a model-zoo package by id through bioimageio.spec's resolution into ``target``."""
    from bioimageio.spec._internal.io_utils import open_bioimageio_yaml

    try:
        opened = open_bioimageio_yaml(model_id)
    except Exception as err:  # noqa: BLE001 - offline, unknown id, server error: all "cannot resolve"
        raise InputError(model_id, f"cannot resolve this model-zoo id ({err.__class__.__name__}: "
                                   f"{str(err).splitlines()[0] if str(err) else ''})") from None
    root = opened.original_root
    if isinstance(root, zipfile.ZipFile):
        return _unpack_zip_object(root, target, model_id)
    if isinstance(root, Path):
        return root
    return _mirror_remote(opened.unparsed_content, str(root), target, model_id)


def _package_from_url(url: str, work: Path) -> Path:
    """Download a package zip (or an rdf.yaml with its files) from ``url``; return the unpacked folder."""
    path = urlparse(url).path.lower()
    if path.endswith((".yaml", ".yml")):
        rdf_file = _download(url, work / "remote_rdf.yaml")
        return _mirror_remote(rdf_file.read_text(encoding="utf-8"), url.rsplit("/", 1)[0], work / "package", url)
    archive = _download(url, work / "package.zip")
    if not zipfile.is_zipfile(archive):
        raise InputError(url, "the download is not a zip file (expected a BioImage.IO package .zip)")
    return extract_zip(archive, work / "package")


def looks_like_zoo_id(spec: str) -> bool:
    """Whether ``spec`` reads as a model-zoo id (e.g. ``affable-shark``, ``affable-shark/1``) rather than a path."""
    return bool(_ZOO_ID.match(spec)) and not spec.lower().endswith((".zip", ".yaml", ".yml", *CHECKPOINT_SUFFIXES))


def load_interpolator(spec: str | Path, *, device: str = "cpu", **options: Any) -> ModelInterpolator:
    """One loader for ``zaugnet predict --model``.

    Parameters
    ----------
    spec
        A training checkpoint (``.pt``), a package zip, a package folder (with ``rdf.yaml``) or its
        ``rdf.yaml``, an http(s) URL of a package zip (or rdf.yaml), or a model-zoo id (resolved with
        bioimageio.spec). An existing path always wins over the other readings.
    device
        Torch device (``cpu``, ``cuda``, ``cuda:N``); ONNX weights run on the CPU only.
    options
        ``weight_format`` (``torchscript``, ``pytorch_state_dict`` or ``onnx``; packages only, default
        the first present in that order); everything else goes to :class:`ModelInterpolator`
        (``batch_size``, ``tile``, ``halo``, ``name``).

    Raises
    ------
    InputError
        For anything that cannot be loaded or fails a safety check (nothing is executed then).
    """
    text = str(spec)
    weight_format = options.pop("weight_format", None)
    path = Path(text).expanduser()
    scheme = urlparse(text).scheme.lower()
    if scheme in ("http", "https"):
        with tempfile.TemporaryDirectory(prefix="zaugnet-model-") as tmp:
            folder = _package_from_url(text, Path(tmp))
            return interpolator_from_package(folder, device=device, weight_format=weight_format, name=text,
                                             **options)
    if path.exists():
        if path.is_dir():
            return interpolator_from_package(path, device=device, weight_format=weight_format, **options)
        if path.name in RDF_NAMES or path.suffix.lower() in (".yaml", ".yml"):
            if path.name not in RDF_NAMES:
                raise InputError(path, f"a package description must be named {' or '.join(RDF_NAMES)}")
            return interpolator_from_package(path.parent, device=device, weight_format=weight_format, **options)
        if path.suffix.lower() in CHECKPOINT_SUFFIXES:
            if weight_format is not None:
                raise InputError("weight_format", "applies to packages only, not to a training checkpoint")
            return from_checkpoint(str(path), device=device, **options)
        if zipfile.is_zipfile(path):
            with tempfile.TemporaryDirectory(prefix="zaugnet-model-") as tmp:
                folder = extract_zip(path, Path(tmp) / "package")
                return interpolator_from_package(folder, device=device, weight_format=weight_format,
                                                 name=str(path), **options)
        raise InputError(path, "not a checkpoint (.pt) or a BioImage.IO package (.zip, folder, rdf.yaml)")
    if scheme or not looks_like_zoo_id(text):
        raise InputError(text, "not found: give a checkpoint (.pt), a package (.zip or a folder with rdf.yaml), "
                               "an http(s) URL or a model-zoo id")
    with tempfile.TemporaryDirectory(prefix="zaugnet-model-") as tmp:
        folder = _resolve_zoo_id(text, Path(tmp) / "package")
        return interpolator_from_package(folder, device=device, weight_format=weight_format, name=text, **options)
