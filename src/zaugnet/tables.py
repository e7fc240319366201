"""Tables written as CSV: evaluation metrics, self-check judgements, training histories, benchmark results."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path

from .atomic import atomic_path


def write_csv(rows: Iterable[dict], path: str | Path, fields: Sequence[str]) -> Path:
    """Write ``rows`` as CSV with the columns ``fields`` (in that order), atomically; return the path.

    Keys a row lacks are left empty; keys not in ``fields`` are not written.
    """
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(fields), restval="", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def columns(rows: Iterable[dict]) -> list[str]:
    """Every key of ``rows``, in order of first appearance (for rows whose keys vary, e.g. a training history)."""
    return list(dict.fromkeys(key for row in rows for key in row))
