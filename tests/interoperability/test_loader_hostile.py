"""Packages, checkpoints and servers from a stranger: nothing runs, nothing allocates or waits without bound,
nothing is written outside the output, and the messages say what to do.

Every hostile file is built here; loads that would hang or exhaust memory on a loader without these guards
run in a subprocess with a timeout and an address-space limit (``RLIMIT_AS``). Servers are real, on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from support import edit_rdf, sha256_file, tiny_config, unpack
from zaugnet.export import load
from zaugnet.export.load import SHIPPED_MODELS, load_interpolator
from zaugnet.export.safezip import extract_zip
from zaugnet.export.torchscript import save_torchscript

from zaugnet.errors import InputError

pytestmark = pytest.mark.bioimageio  # uses packages exported (and tested) with bioimageio.core

#: The weight formats that run no code from the package, in the default order.
NO_CODE = ("pytorch_state_dict", "onnx")
#: Extra address space a child load may take (bytes), and how long it may run (s).
HEADROOM = 3 * 1024**3
CHILD_TIMEOUT = 120

# A child process: load each spec of argv[1:] and report the outcome and how much the peak memory grew.
_CHILD = """
import json, resource, sys
from zaugnet.export.load import load_interpolator
from zaugnet.errors import InputError
vm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmSize:")) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + {headroom}, vm + {headroom}))
for spec in sys.argv[1:]:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        load_interpolator(spec)
        outcome = "loaded"
    except InputError as err:
        outcome = "refused: " + str(err)
    except BaseException as err:
        outcome = "crashed: " + type(err).__name__ + ": " + str(err)[:300]
    grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    print(json.dumps({{"spec": spec, "outcome": outcome, "grew_mb": grew}}), flush=True)
"""


def _load_in_child(*specs: str | Path) -> list[dict[str, Any]]:
    """Outcomes of loading ``specs`` in a fresh process limited to :data:`HEADROOM` more address space."""
    try:
        run = subprocess.run([sys.executable, "-c", _CHILD.format(headroom=HEADROOM), *map(str, specs)],
                             capture_output=True, text=True, timeout=CHILD_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"loading {specs} did not finish within {CHILD_TIMEOUT} s")
    results = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert len(results) == len(specs), run.stdout[-2000:] + run.stderr[-3000:]
    return results





def _rezip(source: Path, target: Path, extra: dict[str, bytes] | None = None) -> Path:
    """``source``'s entries (and ``extra``) deflated into ``target``."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
        for name, data in (extra or {}).items():
            dst.writestr(name, data)
    return target


def _lie_about_size(archive: Path, name: str, size: int) -> None:
    """Make the central directory and the local header of entry ``name`` declare ``size`` bytes."""
    data = bytearray(archive.read_bytes())
    end = data.rindex(b"PK\x05\x06")
    (count,), (offset,) = struct.unpack_from("<H", data, end + 10), struct.unpack_from("<I", data, end + 16)
    for _ in range(count):
        assert data[offset:offset + 4] == b"PK\x01\x02"
        n, m, k = struct.unpack_from("<HHH", data, offset + 28)
        if data[offset + 46:offset + 46 + n].decode() == name:
            struct.pack_into("<I", data, offset + 24, size)
            struct.pack_into("<I", data, struct.unpack_from("<I", data, offset + 42)[0] + 22, size)
        offset += 46 + n + m + k
    archive.write_bytes(bytes(data))


def _predict(model: Any) -> np.ndarray:  # noqa: ANN401 - a ModelInterpolator
    stack = np.random.default_rng(0).random((model.n_slices, 32, 32), dtype=np.float32)
    return model.predict_windows(stack[None], [0.5])


@pytest.fixture()
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary-files folder of this test's own (``tempfile.gettempdir()`` here, ``TMPDIR`` for children)."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


class _Trickle:
    """A loopback HTTP server answering each request with a 200 and then one body byte every ``interval`` s,
    for at most ``lifetime`` s per connection; it stops accepting on :meth:`close` or after ``lifetime`` * 8 s."""

    def __init__(self, interval: float = 0.2, lifetime: float = 15.0) -> None:
        self.interval, self.lifetime = interval, lifetime
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        end = time.monotonic() + 8 * self.lifetime
        with self.sock:
            while not self.stop.is_set() and time.monotonic() < end:
                try:
                    conn, _ = self.sock.accept()
                except TimeoutError:
                    continue
                threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        end = time.monotonic() + self.lifetime
        with conn:
            try:
                conn.settimeout(5)
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/zip\r\nContent-Length: 100000\r\n\r\n")
                while not self.stop.is_set() and time.monotonic() < end:
                    conn.sendall(b"P")
                    time.sleep(self.interval)
            except OSError:
                pass

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)


@pytest.fixture()
def trickle() -> Iterator[_Trickle]:
    """A :class:`_Trickle` server for one test."""
    server = _Trickle()
    try:
        yield server
    finally:
        server.close()


# ------------------------------------------------------------------------------------ 1. TorchScript is code
class _WritesAFile(torch.nn.Module):
    """Scripted, its forward writes ``owned`` into the file ``target`` (created if missing) and passes slice 0."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        payload = torch.tensor([111, 119, 110, 101, 100], dtype=torch.uint8)
        mapped = torch.from_file(self.target, shared=True, size=5, dtype=torch.uint8)
        mapped.copy_(payload)
        return x[:, 0:1] + mapped.sum().float() * 0.0


def test_a_package_torchscript_runs_only_when_asked_for(packages, tmp_path: Path) -> None:
    """A consistent package (sha256s right, valid state dict and ONNX) whose TorchScript writes a file: the
    default load and prediction never run it; ``weight_format="torchscript"`` does (the documented risk)."""
    folder = unpack(packages["zaugnet"], tmp_path / "pkg")
    target = tmp_path / "written_by_torchscript"
    save_torchscript(_WritesAFile(str(target)), folder / "zaugnet_torchscript.pt")
    scripted = sha256_file(folder / "zaugnet_torchscript.pt")
    edit_rdf(folder, lambda r: r["weights"]["torchscript"].update(sha256=scripted))
    for spec in (folder, shutil.make_archive(str(tmp_path / "pkg_zip"), "zip", folder)):
        model = load_interpolator(str(spec))
        _predict(model)
        assert not target.exists()
        assert model.weights_sha256 == sha256_file(folder / "zaugnet_state_dict.pt")
    # only this TorchScript left: refused by default, with the way to run it anyway
    edit_rdf(folder, lambda r: [r["weights"].pop(f) for f in NO_CODE])
    with pytest.raises(InputError, match="weight-format torchscript"):
        load_interpolator(str(folder))
    assert not target.exists()
    # asked for: it runs, and it writes
    model = load_interpolator(str(folder), weight_format="torchscript")
    _predict(model)
    assert target.read_bytes() == b"owned"
    assert model.weights_sha256 == sha256_file(folder / "zaugnet_torchscript.pt")
    assert load.WEIGHT_PRIORITY == NO_CODE and set(load.WEIGHT_FORMATS) == {*NO_CODE, "torchscript"}


@pytest.mark.parametrize("name", ["zaugnet", "zaugnet_plus", "zaugnet_c"])
def test_shipped_packages_load_by_default_from_their_state_dict(name: str) -> None:
    rdf = yaml.safe_load((SHIPPED_MODELS / name / "rdf.yaml").read_text())
    model = load_interpolator(SHIPPED_MODELS / name)
    assert model.weights_sha256 == rdf["weights"]["pytorch_state_dict"]["sha256"]
    assert isinstance(model.network, torch.nn.Module) and not isinstance(model.network, torch.jit.ScriptModule)
    assert model.normalization == "minmax"  # the package's student, normalised once per pair outside


def test_a_shipped_torchscript_is_trusted_by_its_sha256(tmp_path: Path) -> None:
    """A copy of a shipped package with its TorchScript weights only loads them by default (they are ours)."""
    folder = shutil.copytree(SHIPPED_MODELS / "zaugnet", tmp_path / "zaugnet")
    edit_rdf(folder, lambda r: [r["weights"].pop(f) for f in NO_CODE])
    model = load_interpolator(folder)
    assert isinstance(model.network, torch.jit.ScriptModule)
    assert model.weights_sha256 == sha256_file(folder / "zaugnet_torchscript.pt")


def test_a_checkpoint_model_carries_the_checkpoint_sha256(tiny_checkpoints) -> None:
    path = tiny_checkpoints["zaugnet"]
    assert load_interpolator(str(path)).weights_sha256 == sha256_file(path)


# ------------------------------------------------------------------------------------ 2. the rdf's YAML
def _billion_laughs() -> str:
    """An rdf of about 500 bytes whose aliases, nested 10 deep, stand for 10**10 strings."""
    lines = ["type: model", "a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("where", ["folder", "url"])
def test_yaml_aliases_are_refused_at_once(where: str, tmp_path: Path, http_root) -> None:
    text = _billion_laughs()
    assert len(text) < 600
    served, base = http_root
    folder = (tmp_path if where == "folder" else served) / "laughs"
    folder.mkdir()
    (folder / "rdf.yaml").write_text(text)
    (result,) = _load_in_child(folder if where == "folder" else f"{base}/laughs/rdf.yaml")
    assert result["outcome"].startswith("refused") and "aliases" in result["outcome"], result


def test_deep_or_huge_rdfs_are_refused(tmp_path: Path) -> None:
    for name, text, message in [
        ("deep", "type: model\nx: " + "[" * 50_000 + "]" * 50_000 + "\n", "nested deeper"),
        ("huge", "type: model\n# " + "x" * 1024**2 + "\n", "larger than"),
    ]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "rdf.yaml").write_text(text)
        started = time.monotonic()
        with pytest.raises(InputError, match=message):
            load_interpolator(str(tmp_path / name))
        assert time.monotonic() - started < 10


# ------------------------------------------------------------------------------------ 3. temporary folders
def test_a_killed_load_leaves_no_folder_for_long(packages, trickle: _Trickle, private_tmp: Path) -> None:
    """Interrupted (SIGINT), a load removes its folder; killed (SIGKILL), it cannot, and the next load does."""
    code = "import sys; from zaugnet.export.load import load_interpolator; load_interpolator(sys.argv[1])"
    env = {**os.environ, "TMPDIR": str(private_tmp)}
    for sig, left in ((signal.SIGINT, False), (signal.SIGKILL, True)):
        proc = subprocess.Popen([sys.executable, "-c", code, f"{trickle.url}/slow.zip"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while not list(private_tmp.glob("zaugnet-model-*")) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert list(private_tmp.glob("zaugnet-model-*")), "the child never started downloading"
            time.sleep(0.5)
            proc.send_signal(sig)
            proc.wait(timeout=30)
        finally:
            proc.kill()
            proc.wait()
        assert bool(list(private_tmp.glob("zaugnet-model-*"))) is left, sig
    load_interpolator(str(packages["zaugnet"]))
    assert list(private_tmp.glob("zaugnet-model-*")) == []


# ------------------------------------------------------------------------------------ 4. bounded networks
def _hostile_checkpoint(path: Path, width: int, depth: int) -> Path:
    config = tiny_config().to_dict()
    config["net"].update(block_widths=[width] * 3, teacher_width=width, trunk_depth=depth)
    torch.save({"format": "zaugnet-checkpoint", "format_version": 1, "config": config, "generator": {}}, path)
    return path


def _hostile_package(package: Path, target: Path, width: int, depth: int) -> Path:
    """The package with its state dict's architecture kwargs changed, and its other weights dropped."""
    def edit(rdf: dict[str, Any]) -> None:
        rdf["weights"] = {"pytorch_state_dict": rdf["weights"]["pytorch_state_dict"]}
        rdf["weights"]["pytorch_state_dict"]["architecture"]["kwargs"].update(block_widths=[width] * 3,
                                                                              trunk_depth=depth)

    folder = unpack(package, target)
    edit_rdf(folder, edit)
    return folder


def test_networks_from_untrusted_configs_are_bounded_before_allocation(packages, tmp_path: Path) -> None:
    """3 KB checkpoints and packages asking for huge networks (widths 4000-4096, depth 64: 7 GB) are refused by
    the config's bounds; ones within the bounds (widths 512, depth 32: about 1 GB) whose weights do not match
    are refused by the meta-device check, before the network is allocated."""
    specs = [_hostile_checkpoint(tmp_path / "match.pt", 512, 32),
             _hostile_package(packages["zaugnet"], tmp_path / "match_pkg", 512, 32),
             _hostile_checkpoint(tmp_path / "huge.pt", 4000, 64),
             _hostile_package(packages["zaugnet"], tmp_path / "huge_pkg", 4096, 64)]
    assert specs[0].stat().st_size < 4096 and specs[2].stat().st_size < 4096
    started = time.monotonic()
    results = _load_in_child(*specs)
    assert time.monotonic() - started < 60
    for result, message in zip(results, ["weights do not match", "weights do not match", "net.", "not valid"]):
        assert result["outcome"].startswith("refused") and message in result["outcome"], results
        assert result["grew_mb"] < 300, results


def test_compressed_torch_records_are_refused(tiny_checkpoints, packages, tmp_path: Path) -> None:
    """A torch file with deflated records could unpack to 1000 times its size: refused (torch never writes it)."""
    checkpoint = _rezip(tiny_checkpoints["zaugnet"], tmp_path / "deflated.pt")
    with pytest.raises(InputError, match="compressed"):
        load_interpolator(str(checkpoint))
    folder = unpack(packages["zaugnet"], tmp_path / "pkg")
    weights = folder / "zaugnet_state_dict.pt"
    _rezip(weights, tmp_path / "state.pt")
    shutil.move(tmp_path / "state.pt", weights)
    edit_rdf(folder, lambda r: r["weights"]["pytorch_state_dict"].update(sha256=sha256_file(weights)))
    with pytest.raises(InputError, match="compressed"):
        load_interpolator(str(folder))


# ------------------------------------------------------------------------------------ 5. zips
def test_a_zip_entry_larger_than_declared_is_refused_with_no_output(packages, tmp_path: Path,
                                                                   private_tmp: Path) -> None:
    bad = _rezip(packages["zaugnet"], tmp_path / "lying.zip")
    _lie_about_size(bad, "README.md", 16)
    with zipfile.ZipFile(bad) as zf:
        assert zf.getinfo("README.md").file_size == 16
    with pytest.raises(InputError, match="README.md.*(larger than declared|lies about its size)"):
        extract_zip(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(InputError, match="README.md"):
        load_interpolator(str(bad))
    assert list(private_tmp.iterdir()) == []  # the refused load's temporary folder is gone


def test_only_the_files_the_rdf_lists_are_unpacked(packages, tmp_path: Path) -> None:
    """An entry the rdf never mentions (here 16 MiB of zeros, 16 KB deflated) is not written."""
    big = _rezip(packages["zaugnet"], tmp_path / "extra.zip", extra={"junk.bin": bytes(16 * 1024**2),
                                                                   "docs/notes.txt": b"not listed"})
    out = extract_zip(big, tmp_path / "out")
    with zipfile.ZipFile(packages["zaugnet"]) as zf:  # the exporter's zip holds the rdf and its files only
        assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == sorted(zf.namelist())
    assert load_interpolator(str(big)).variant == "zaugnet"


def test_a_hostile_zip_from_the_zoo_is_refused(packages, http_root, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """bioimageio.spec resolves an id through the id map to a package zip and hands over the open ZipFile:
    it is unpacked by the same routine as a zip file, so an entry that lies about its size is refused."""
    from bioimageio.spec._internal._settings import settings
    from bioimageio.spec._internal.io_utils import get_id_map

    served, base = http_root
    (served / "zoo").mkdir()
    bad = _rezip(packages["zaugnet"], served / "zoo" / "hostile.zip")
    _lie_about_size(bad, "README.md", 16)
    (served / "zoo" / "id_map.json").write_text(json.dumps(
        {"hostile-zip": {"source": f"{base}/zoo/hostile.zip", "sha256": sha256_file(bad)}}))
    monkeypatch.setattr(settings, "collection_http_pattern", f"{base}/zoo/missing/{{bioimageio_id}}.yaml")
    monkeypatch.setattr(settings, "id_map", f"{base}/zoo/id_map.json")
    monkeypatch.setattr(settings, "resolve_draft", False)
    monkeypatch.setattr(settings, "cache_path", tmp_path / "bioimageio_cache")
    get_id_map.cache_clear()
    try:
        with pytest.raises(InputError, match="README.md.*(larger than declared|lies about its size)"):
            load_interpolator("hostile-zip")
    finally:
        get_id_map.cache_clear()


# ------------------------------------------------------------------------------------ 6. slow servers
def test_a_download_has_an_overall_deadline(trickle: _Trickle, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server sending one byte every 0.2 s never trips the per-read timeout; the deadline stops it."""
    monkeypatch.setattr(load, "DOWNLOAD_DEADLINE", 1.0, raising=False)
    started = time.monotonic()
    with pytest.raises(InputError, match="deadline"):
        load_interpolator(f"{trickle.url}/slow.zip")
    assert time.monotonic() - started < 8


# ------------------------------------------------------------------------------------ 7. messages
class _RunsCode:
    """Unpickling this runs a command: the proof that a load executed the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (f"touch {self.marker}",))


def test_messages_for_mistyped_paths_and_malicious_checkpoints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              ) -> None:
    from bioimageio.spec._internal._settings import settings

    closed = socket.create_server(("127.0.0.1", 0))  # a lookup would get "connection refused", not our message
    port = closed.getsockname()[1]
    closed.close()
    monkeypatch.setattr(settings, "collection_http_pattern", f"http://127.0.0.1:{port}/{{bioimageio_id}}.yaml")
    monkeypatch.setattr(settings, "id_map", f"http://127.0.0.1:{port}/id_map.json")
    monkeypatch.chdir(tmp_path)
    for spec in ("./modles/x.zip", "runs/a/final.pt", "runs/a/final", "models/zaugnet", "~/no-such-model"):
        with pytest.raises(InputError, match="no such file or model-zoo id") as err:
            load_interpolator(spec)
        assert spec in str(err.value)
    marker = tmp_path / "pwned"
    evil = tmp_path / "final.pt"
    torch.save({"format": "zaugnet-checkpoint", "format_version": 1, "config": {}, "x": _RunsCode(marker)}, evil)
    with pytest.raises(InputError, match="refused") as err:
        load_interpolator(str(evil))
    assert "weights_only" not in str(err.value) and "posix.system" in str(err.value), err.value
    assert not marker.exists()
