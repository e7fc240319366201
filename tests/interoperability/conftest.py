"""Fixtures for the export / package / loader tests: packages exported once per session, a local HTTP server."""

from __future__ import annotations

import functools
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from zaugnet.phantoms import simulate_stack

VARIANTS = ("zaugnet", "zaugnet+", "zaugnet-c")


def slug(variant: str) -> str:
    """A file-name-safe variant name."""
    return variant.replace("+", "_plus").replace("-", "_")


@pytest.fixture(scope="session")
def export_sample() -> np.ndarray:
    """A small uint16 phantom stack (3 x 64 x 96): the packages' test tensors and cover come from it (ZAugNet-C:
    slices 0, 1, 2, 2, the edge slice repeated)."""
    return simulate_stack((3, 64, 96), kind="membrane", seed=4)


@pytest.fixture(scope="session")
def packages(tiny_checkpoints: dict[str, Path], export_sample: np.ndarray,
             tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``variant -> package.zip`` exported from the tiny checkpoints, bioimageio.core's test included."""
    from zaugnet.export import export_model

    out = tmp_path_factory.mktemp("packages")
    return {v: export_model(tiny_checkpoints[v], out / f"{slug(v)}.zip", sample=export_sample, sample_z=0.25)
            for v in VARIANTS}


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass


@pytest.fixture(scope="module")
def http_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """``(folder, base_url)``: a real HTTP server on 127.0.0.1 (port chosen by the OS) serving ``folder``."""
    folder = tmp_path_factory.mktemp("served")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="session")
def fiji_home() -> str:
    """FIJI_HOME (a Fiji.app with deepImageJ and its engines), or a skip saying what is missing."""
    fiji = os.environ.get("FIJI_HOME")
    if not fiji:
        pytest.skip("FIJI_HOME is not set: no Fiji.app with deepImageJ here (set FIJI_HOME=/path/to/Fiji.app "
                    "and pip install pyimagej to run the macros with the real deepImageJ)")
    if not Path(fiji).is_dir():
        pytest.fail(f"FIJI_HOME={fiji} is not a folder")
    pytest.importorskip("imagej", reason="pyimagej is not installed (pip install pyimagej)")
    return fiji
