"""Run one of our ImageJ macros in a real Fiji (with deepImageJ) through pyimagej, in its own process.

    python run_in_fiji.py FIJI_HOME MACRO.ijm "model=... input=... factor=... output=..."

pyimagej starts one JVM per process and cannot restart it, so the opt-in test calls this script once per
macro run. Fiji is used as it is (``imagej.init(FIJI_HOME, mode="headless")``), from inside FIJI_HOME: deepImageJ
finds its ``models/`` and ``engines/`` from the Fiji folder (it looks for the launcher above ``java.home``, which
an outside JVM does not have), and on its first run it downloads the engines there (internet needed once).
Prints ImageJ's Log window (headless: also stdout, where an exception of deepImageJ is printed) and exits with 0
when the macro ran (the caller checks the output file and the number of deepImageJ calls), 1 when it raised.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    fiji, macro, args = argv
    import imagej  # pyimagej; only needed for this opt-in path

    macro, fiji = os.path.abspath(macro), os.path.abspath(fiji)
    os.chdir(fiji)
    ij = imagej.init(fiji, mode="headless")
    code = f'runMacro("{_escape(macro)}", "{_escape(args)}");'
    status = 0
    try:
        ij.py.run_macro(code)
    except Exception as err:  # noqa: BLE001 - reported to the caller, who fails the test with it
        print(f"macro raised {err.__class__.__name__}: {err}", file=sys.stderr)
        status = 1
    log = ij.IJ.getLog()
    if log:
        print(str(log))
    return status


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # Fiji's non-daemon threads may keep the JVM (and so this process) alive
