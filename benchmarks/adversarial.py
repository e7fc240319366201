"""Run the whole hostile-input set and print one line per case and a count.

The cases are the regression tests that build hostile files and requests themselves (malicious
TorchScript, YAML alias bombs, oversized networks, lying zips and TIFFs, non-finite options, two writers
of one OME-Zarr store, SIGTERM mid-write, ...): each passes only if zaugnet handled the case cleanly
(refused with one ``zaugnet: error:`` line and exit 2 before any work, or ran without touching what it
must not). Running them here, rather than a second copy of every builder, keeps one definition of each
case.

    python benchmarks/adversarial.py [-o benchmarks/results]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: The test modules that hold the hostile-input cases.
MODULES = (
    "tests/integration/test_cli_hostile.py",
    "tests/integration/test_zarr_safety.py",
    "tests/interoperability/test_loader_hostile.py",
    "tests/unit/test_io_hostile.py",
)


class _Collector:
    """A pytest plugin that keeps each case's outcome and duration."""

    def __init__(self) -> None:
        self.cases: list[tuple[str, str, float]] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            outcome = {"passed": "handled cleanly", "failed": "FAILED", "skipped": "skipped"}[report.outcome]
            self.cases.append((report.nodeid, outcome, report.duration))


def run(modules: tuple[str, ...] = MODULES) -> list[tuple[str, str, float]]:
    """Run the cases; return ``(case, outcome, seconds)`` per case."""
    collector = _Collector()
    pytest.main(["-q", "-p", "no:cacheprovider", "--no-header", "-o", "console_output_style=classic",
                 *[str(ROOT / m) for m in modules]], plugins=[collector])
    return collector.cases


def report(cases: list[tuple[str, str, float]]) -> str:
    """One line per case, then ``tried / handled cleanly / failed / skipped``."""
    lines = [f"{outcome:<16} {seconds:6.2f} s  {case}" for case, outcome, seconds in cases]
    counts = {k: sum(o == k for _, o, _ in cases) for k in ("handled cleanly", "FAILED", "skipped")}
    lines.append(f"tried {len(cases)} / handled cleanly {counts['handled cleanly']} / failed {counts['FAILED']}"
                 f" / skipped {counts['skipped']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line: run, print, and with ``-o`` write ``adversarial.md``; exit 1 if any case failed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", type=Path, help="folder for adversarial.md")
    args = parser.parse_args(argv)
    start = time.monotonic()
    cases = run()
    text = report(cases)
    print("\n" + text)
    if args.output:
        from zaugnet.atomic import atomic_write_text

        atomic_write_text(args.output / "adversarial.md",
                          f"# Hostile inputs\n\n`python benchmarks/adversarial.py -o {args.output}` "
                          f"({time.monotonic() - start:.0f} s)\n\n```\n{text}\n```\n")
    return 1 if any(outcome == "FAILED" for _, outcome, _ in cases) else 0


if __name__ == "__main__":
    sys.exit(main())
