"""One loader for ``zaugnet predict --model``: checkpoint, package (zip or folder), URL or model-zoo id.

Everything but a training checkpoint is a BioImage.IO package, and packages (and checkpoints) come from
elsewhere. What :func:`load_interpolator` guarantees for them:

- **nothing from the file runs** by default: a checkpoint and a ``pytorch_state_dict`` are read with
  ``torch.load(weights_only=True)`` into zaugnet's OWN networks (a package's architecture file is never
  imported); ONNX runs in onnxruntime. TorchScript is code (it can, e.g., write files), so a package's
  TorchScript weights run only when asked for (``weight_format="torchscript"``) or when they are
  byte-identical (sha256) to those of a package shipped in ``bioimageio_models/``. Default order:
  :data:`WEIGHT_PRIORITY`; all choices: :data:`WEIGHT_FORMATS`;
- **memory is bounded before it is allocated**: the rdf is at most 1 MB, without YAML anchors or aliases
  and nested at most 32 deep; network widths and depth are bounded by
  :class:`~zaugnet.training.config.NetConfig`; the network is built on the meta device first and the
  weights' tensor names and shapes must equal its own; torch files must hold uncompressed records;
  downloads and zips are size-capped and a download has an overall deadline (:data:`DOWNLOAD_DEADLINE`);
- **nothing is written outside the output**: zips are checked before anything is unpacked (no ``..``, no
  absolute paths, no links, no duplicates, size caps, entries no larger than declared) and only the rdf and
  the files it lists are unpacked, into a private temporary folder (``zaugnet-model-<pid>-*``) that is
  removed on every exit path; folders left by killed processes are removed by the next load;
- every file the rdf lists must lie inside the package, exist, and match its ``sha256``; the weights
  used must declare one;
- packages with pre- or postprocessing steps are refused (ZAugNet packages normalise inside the network).

Not covered: an ONNX graph is data, not code, but the memory it takes at run time is the graph's own (ONNX
weights are used only when a package has no ``pytorch_state_dict`` or when asked for); a zoo id's rdf is
fetched and parsed by bioimageio.spec before it reaches these checks.

For ZAugNet's own packages the student inside the wrapper is used with the normalisation recorded in the
rdf, applied once per pair by :class:`~zaugnet.predict.interpolator.ModelInterpolator` (so tiles of a large
slice share one intensity range, exactly as with the checkpoint); other networks run whole with
``normalization="none"``.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlparse

import numpy as np
import torch
from zaugnet.training.checkpoint import build_matching, load_generator, load_plain
from zaugnet.training.config import NetConfig
from zaugnet.training.nets import build_student

from zaugnet.atomic import process_alive
from zaugnet.errors import InputError
from zaugnet.predict.interpolator import ModelInterpolator
from zaugnet.variants import VARIANTS, from_channels

from .architecture import CALLABLE
from .safezip import (
    MAX_ENTRIES,
    MAX_RDF_BYTES,
    RDF_NAMES,
    extract_package,
    extract_zip,
    file_refs,
    package_files,
    parse_rdf,
    read_bounded,
    relative_source,
)
from .wrapper import NormalizedStudent

#: Weight formats a package may be loaded from (``weight_format=``, ``--weight-format``).
WEIGHT_FORMATS = ("pytorch_state_dict", "onnx", "torchscript")
#: Weight formats tried, in order, when none is asked for: neither runs code from the package (TorchScript
#: follows only when it is byte-identical to a shipped package's).
WEIGHT_PRIORITY = ("pytorch_state_dict", "onnx")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
#: Largest download accepted (bytes), in all for one load.
MAX_DOWNLOAD = 4 * 1024**3
#: Seconds each network read may wait, and seconds all downloads of one load may take together.
HTTP_TIMEOUT = 60.0
DOWNLOAD_DEADLINE = 1800.0
#: Prefix of the temporary folders of one load (followed by the process id and ``-``).
WORK_PREFIX = "zaugnet-model-"
_ZOO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[0-9][0-9.]*)?$")
#: The packages shipped in the repository (``bioimageio_models/`` beside ``export/``).
SHIPPED_MODELS = Path(__file__).resolve().parents[1] / "bioimageio_models"
#: The shipped package ``zaugnet predict`` uses when no ``--model`` is given: ZAugNet+, which serves any factor
#: and scored best of the three on the real stacks none was trained on (benchmarks/results/accuracy.md).
DEFAULT_MODEL = "zaugnet_plus"


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
                                    "(a checkpoint, a package, a URL or a model-zoo id) or --method "
                                    "linear|cubic|spline")
    return path


# ------------------------------------------------------------------------------------ files
def sha256_of(path: Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_package_files(folder: Path, rdf: dict[str, Any], name: str) -> None:
    """Check every file the rdf lists: inside ``folder``, present, and matching its sha256 when given.

    Weights entries (and an architecture file) must declare a sha256.
    """
    root = folder.resolve()
    for where, ref in file_refs(rdf):
        rel = relative_source(ref["source"], where, name)
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
    """The package's rdf (bounded: :func:`~.safezip.parse_rdf`) and its path; InputError unless it is a model's."""
    for candidate in RDF_NAMES:
        path = folder / candidate
        if path.is_file():
            with open(path, "rb") as f:
                rdf = parse_rdf(read_bounded(f, MAX_RDF_BYTES, name, candidate), name)
            if rdf.get("type") != "model":
                raise InputError(name, f"{candidate} does not describe a model (type: model)")
            return rdf, path
    raise InputError(name, f"no {' or '.join(RDF_NAMES)} found: not a BioImage.IO package")


@functools.cache
def _shipped_torchscript() -> frozenset[str]:
    """sha256 of the TorchScript weights of the packages shipped in :data:`SHIPPED_MODELS` (zaugnet's own)."""
    found = set()
    for folder in sorted(p.parent for p in SHIPPED_MODELS.glob("*/rdf.yaml")):
        try:
            rdf, _ = _read_rdf(folder, str(folder))
        except InputError:
            continue
        sha = ((rdf.get("weights") or {}).get("torchscript") or {}).get("sha256")
        if isinstance(sha, str):
            found.add(sha.lower())
    return frozenset(found)


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
    n_channels = len(channels) if isinstance(channels, list) else None
    named = zconfig.get("variant")
    if named is not None and named not in VARIANTS:
        raise InputError(name, f"config.zaugnet.variant {named!r} is not one of {', '.join(VARIANTS)}")
    found = VARIANTS[named] if named is not None else from_channels(n_channels) if n_channels else None
    if found is None:
        raise InputError(name, "not a ZAugNet package: the input must have 2 channels [slice_0, slice_1], "
                               "3 [slice_0, slice_1, dpm] or K + 1 [K slices, dpm] (ZAugNet-C)")
    n_slices = 2 if n_channels is None else n_channels - int(found.with_dpm)
    if found.context and (n_channels is None or n_slices < 4 or n_slices % 2):
        raise InputError(name, f"a {found.title} package needs an even number K >= 4 of slices and the DPM as input "
                               f"channels, got {n_channels if n_channels is not None else 'no channel names'}")
    if not found.context and n_slices != 2:
        raise InputError(name, f"a {found.name} package needs {found.n_channels(2)} input channels, the rdf names "
                               f"{n_channels}")
    return found.name, n_slices, zconfig


def _outer_normalization(zconfig: dict[str, Any]) -> tuple[str, tuple[float, float]] | None:
    norm = zconfig.get("normalization")
    if not isinstance(norm, dict) or norm.get("mode") not in ("minmax", "percentile"):
        return None
    lo, hi = (float(p) for p in norm.get("percentiles") or (0.1, 99.9))
    return str(norm["mode"]), (lo, hi)


def _state_dict_network(entry: dict[str, Any], weights: Path, name: str, variant: str,
                        device: str, n_slices: int = 2) -> torch.nn.Module:
    """zaugnet's own network for a ``pytorch_state_dict`` entry: kwargs validated, shapes checked on the meta
    device, weights read with ``weights_only=True``."""
    arch = entry.get("architecture") or {}
    arch = arch if isinstance(arch, dict) else {"callable": arch}
    if arch.get("callable") != CALLABLE:
        raise InputError(name, f"pytorch_state_dict: architecture {arch.get('callable')!r} is not zaugnet's "
                               f"{CALLABLE!r}; refusing to run an unknown architecture file")
    kwargs = arch.get("kwargs") or {}
    try:
        if not isinstance(kwargs, dict):
            raise TypeError("kwargs is not a mapping")
        context = {"context_slices": kwargs.get("context_slices", 4), "head_width": kwargs.get("head_width", 16)}
        net = NetConfig(variant=kwargs.get("variant"), block_widths=kwargs.get("block_widths"),
                        trunk_depth=kwargs.get("trunk_depth"), context_width=kwargs.get("context_width"),
                        unet_width=kwargs.get("unet_width"), **context)
        lo, hi = (float(q) for q in kwargs.get("percentiles") or (0.1, 99.9))
        normalization = kwargs.get("normalization", "minmax")
        if net.variant != variant or net.n_slices != n_slices or not 0 <= lo < hi <= 100 \
                or normalization not in ("minmax", "percentile"):
            raise ValueError(f"variant {net.variant} with {net.n_slices} slices (package: {variant}, {n_slices}), "
                             "normalization minmax or percentile and 0 <= percentiles <= 100 expected")
    except (ValueError, TypeError) as err:
        raise InputError(name, f"pytorch_state_dict: architecture kwargs are not valid ({err})") from None
    state = load_plain(weights, f"{name}: {weights.name}")
    network = build_matching(lambda: NormalizedStudent(build_student(net), net.with_dpm, normalization, (lo, hi),
                                                       net.n_slices),
                             state, f"{name}: {weights.name}", "the architecture kwargs")
    return network.to(device).eval()


class _OnnxNetwork:
    """An onnxruntime session as a torch callable (CPU)."""

    def __init__(self, path: Path) -> None:
        from .onnx import onnx_session

        self.session = onnx_session(path)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        from .onnx import run_onnx

        return torch.from_numpy(run_onnx(self.session, x.detach().cpu().numpy().astype(np.float32)))


def _choose_weights(weights: Any, weight_format: str | None, label: str) -> str:  # noqa: ANN401 - rdf data
    """The weight format to load: the one asked for, else the first of :data:`WEIGHT_PRIORITY` present, else
    TorchScript only if it is a shipped package's."""
    if weight_format is not None and weight_format not in WEIGHT_FORMATS:
        raise InputError("weight_format", f"choose from {', '.join(WEIGHT_FORMATS)}, got {weight_format!r}")
    weights = weights if isinstance(weights, dict) else {}
    if weight_format is not None:
        if weight_format not in weights:
            raise InputError(label, f"no {weight_format} weights in the package")
        return weight_format
    scripted = weights.get("torchscript")
    ours = isinstance(scripted, dict) and str(scripted.get("sha256", "")).lower() in _shipped_torchscript()
    chosen = next((f for f in (*WEIGHT_PRIORITY, *(("torchscript",) if ours else ())) if f in weights), None)
    if chosen is None:
        extra = ("; its TorchScript weights are code, not zaugnet's own, and run only when asked for "
                 "(weight_format='torchscript', --weight-format torchscript)" if "torchscript" in weights else "")
        raise InputError(label, f"no {' / '.join(WEIGHT_PRIORITY)} weights in the package{extra}")
    return chosen


def from_checkpoint(path: str, *, device: str = "cpu", **options: object) -> ModelInterpolator:
    """A :class:`ModelInterpolator` from a training checkpoint (``RUN_DIR/final.pt``)."""
    config, generator = load_generator(path)
    student = generator.student.to(device).eval()
    return ModelInterpolator(student, config.net.variant, device=device, normalization=config.data.normalization,
                             percentiles=config.data.percentiles, n_slices=config.net.n_slices,
                             **options)  # type: ignore[arg-type]


def interpolator_from_package(folder: str | Path, *, device: str = "cpu", weight_format: str | None = None,
                              name: str | None = None, **options: Any) -> ModelInterpolator:
    """A :class:`ModelInterpolator` from an unpacked package folder (files verified first).

    ``weight_format`` is one of :data:`WEIGHT_FORMATS`; ``"torchscript"`` runs the package's code (only
    for packages you trust). Default: :func:`_choose_weights`.
    """
    from .torchscript import load_torchscript

    folder = Path(folder)
    label = name or str(folder)
    rdf, _ = _read_rdf(folder, label)
    verify_package_files(folder, rdf, label)
    variant, n_slices, zconfig = _variant(rdf, label)
    chosen = _choose_weights(rdf.get("weights"), weight_format, label)
    entry = rdf["weights"][chosen]
    if not isinstance(entry, dict) or not isinstance(entry.get("source"), str):
        raise InputError(label, f"weights.{chosen} names no source file")
    path = folder / relative_source(entry["source"], f"weights.{chosen}", label)
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
    options = {**options, "weights_sha256": str(entry["sha256"]).lower()}  # verified against the file above
    return ModelInterpolator(network, variant, device=device, normalization=mode, percentiles=percentiles,
                             n_slices=n_slices, **options)


# ------------------------------------------------------------------------------------ remote
def _download(url: str, dest: Path, *, max_bytes: int = MAX_DOWNLOAD, deadline: float | None = None) -> int:
    """Stream ``url`` to the new file ``dest`` (http/https only, size-capped, before ``deadline``); its size.

    ``deadline`` is a :func:`time.monotonic` time, by default :data:`DOWNLOAD_DEADLINE` seconds from now.
    """
    import httpx

    if urlparse(url).scheme not in ("http", "https"):
        raise InputError(url, "only http and https URLs can be downloaded")
    deadline = time.monotonic() + DOWNLOAD_DEADLINE if deadline is None else deadline
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
                    if time.monotonic() > deadline:
                        raise InputError(url, f"download refused: not finished within the deadline "
                                              f"({DOWNLOAD_DEADLINE:g} s for one load)")
                    f.write(chunk)
    except httpx.HTTPError as err:
        raise InputError(url, f"download failed ({err.__class__.__name__}: {err})") from None
    return size


def _mirror_remote(rdf_text: str | bytes, base_url: str, target: Path, label: str,
                   deadline: float | None = None) -> Path:
    """Write the rdf and download every file it lists (relative to ``base_url``) into ``target``."""
    files = package_files(parse_rdf(rdf_text, label), label)
    if len(files) > MAX_ENTRIES:
        raise InputError(label, f"refused: the rdf lists {len(files)} files (more than {MAX_ENTRIES})")
    target.mkdir(parents=True)
    (target / "rdf.yaml").write_bytes(rdf_text.encode("utf-8") if isinstance(rdf_text, str) else rdf_text)
    base = base_url if base_url.endswith("/") else base_url + "/"
    deadline = time.monotonic() + DOWNLOAD_DEADLINE if deadline is None else deadline
    budget = MAX_DOWNLOAD
    for rel in sorted(files):
        dest = target.joinpath(*rel.parts)
        if dest.exists():
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        budget -= _download(urljoin(base, str(rel)), dest, max_bytes=budget, deadline=deadline)
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
        return extract_package(root, target, model_id)
    if isinstance(root, Path):
        return root
    return _mirror_remote(opened.unparsed_content, str(root), target, model_id)


def _package_from_url(url: str, work: Path) -> Path:
    """Download a package zip (or an rdf.yaml with its files) from ``url``; return the unpacked folder."""
    deadline = time.monotonic() + DOWNLOAD_DEADLINE
    if urlparse(url).path.lower().endswith((".yaml", ".yml")):
        rdf_file = work / "remote_rdf.yaml"
        _download(url, rdf_file, max_bytes=MAX_RDF_BYTES, deadline=deadline)
        return _mirror_remote(rdf_file.read_bytes(), url.rsplit("/", 1)[0], work / "package", url, deadline)
    archive = work / "package.zip"
    _download(url, archive, deadline=deadline)
    if not zipfile.is_zipfile(archive):
        raise InputError(url, "the download is not a zip file (expected a BioImage.IO package .zip)")
    return extract_zip(archive, work / "package")


# ------------------------------------------------------------------------------------ temporary folders
def remove_stale_workspaces() -> list[Path]:
    """Remove this user's ``zaugnet-model-<pid>-*`` temporary folders whose process is gone (killed mid-load).

    Returns
    -------
    list of Path
        The folders removed.
    """
    removed = []
    for path in Path(tempfile.gettempdir()).glob(f"{WORK_PREFIX}*"):
        found = re.fullmatch(rf"{re.escape(WORK_PREFIX)}(\d+)-.+", path.name)
        try:
            ours = not path.is_symlink() and path.is_dir() and path.stat().st_uid == os.getuid()
        except OSError:
            continue
        if found and ours and int(found.group(1)) != os.getpid() and not process_alive(int(found.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


@contextmanager
def _workspace() -> Iterator[Path]:
    """A new private temporary folder for one load, removed on every exit path (stale ones removed first)."""
    remove_stale_workspaces()
    path = Path(tempfile.mkdtemp(prefix=f"{WORK_PREFIX}{os.getpid()}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------------------------------------ the loader
def looks_like_zoo_id(spec: str) -> bool:
    """Whether ``spec`` reads as a model-zoo id (``affable-shark``, ``affable-shark/1``) rather than a path."""
    return bool(_ZOO_ID.match(spec)) and not spec.lower().endswith((".zip", ".yaml", ".yml", *CHECKPOINT_SUFFIXES))


def load_interpolator(spec: str | Path, *, device: str = "cpu", **options: Any) -> ModelInterpolator:
    """One loader for ``zaugnet predict --model``.

    Parameters
    ----------
    spec
        A training checkpoint (``.pt``), a package zip, a package folder (with ``rdf.yaml``) or its
        ``rdf.yaml``, an http(s) URL of a package zip (or rdf.yaml), or a model-zoo id (resolved with
        bioimageio.spec). An existing path always wins over the other readings; a missing one (anything
        with a path separator, a file suffix or a leading ``.`` or ``~``) is refused without a network lookup.
    device
        Torch device (``cpu``, ``cuda``, ``cuda:N``); ONNX weights run on the CPU only.
    options
        ``weight_format`` (one of :data:`WEIGHT_FORMATS`; packages only; default :data:`WEIGHT_PRIORITY`,
        see the module docstring; ``"torchscript"`` runs the package's code); everything else goes to
        :class:`ModelInterpolator` (``batch_size``, ``tile``, ``halo``, ``name``). ``weights_sha256`` is set
        to the sha256 of the weights file used.

    Raises
    ------
    InputError
        For anything that cannot be loaded or fails a safety check (nothing is executed then).
    """
    text = str(spec)
    weight_format = options.pop("weight_format", None)
    if weight_format is not None and weight_format not in WEIGHT_FORMATS:
        raise InputError("weight_format", f"choose from {', '.join(WEIGHT_FORMATS)}, got {weight_format!r}")
    package = functools.partial(interpolator_from_package, device=device, weight_format=weight_format, **options)
    path = Path(text).expanduser()
    scheme = urlparse(text).scheme.lower()
    if scheme in ("http", "https"):
        with _workspace() as work:
            return package(_package_from_url(text, work), name=text)
    if path.exists():
        if path.is_dir():
            return package(path)
        if path.name in RDF_NAMES or path.suffix.lower() in (".yaml", ".yml"):
            if path.name not in RDF_NAMES:
                raise InputError(path, f"a package description must be named {' or '.join(RDF_NAMES)}")
            return package(path.parent)
        if path.suffix.lower() in CHECKPOINT_SUFFIXES:
            if weight_format is not None:
                raise InputError("weight_format", "applies to packages only, not to a training checkpoint")
            return from_checkpoint(str(path), device=device, **{**options, "weights_sha256": sha256_of(path)})
        if zipfile.is_zipfile(path):
            with _workspace() as work:
                return package(extract_zip(path, work / "package"), name=str(path))
        raise InputError(path, "not a checkpoint (.pt) or a BioImage.IO package (.zip, folder, rdf.yaml)")
    if scheme or not looks_like_zoo_id(text):
        raise InputError(text, "not found: no such file or model-zoo id (give a checkpoint (.pt), a package "
                               "(.zip or a folder with rdf.yaml), an http(s) URL or a model-zoo id)")
    with _workspace() as work:
        return package(_resolve_zoo_id(text, work / "package"), name=text)
