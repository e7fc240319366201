"""Write fiji_macros/zaugnet.ijm, zaugnet_plus.ijm and zaugnet_c.ijm from ONE template, zaugnet.ijm.in, and
zs_deconvnet.ijm from zs_deconvnet.ijm.in with the helper functions of zaugnet.ijm.in.

    python fiji_macros/generate_macros.py           # (re)write the four macros
    python fiji_macros/generate_macros.py --check   # exit 1, naming them, if a committed macro differs

The three macros run the same code (ZAugNet+ is ZAugNet-C with K = 2 slices; ZAugNet is K = 2 without the DPM
channel, run in passes of midpoints); they differ only in their header comment and in three variables (the
macro's file name, the package variant it takes, the variant's name). ImageJ macros cannot include files, so
each macro is a complete copy; tests/interoperability/test_imagej.py checks that the committed files are what
this script writes. The ZS-DeconvNet macro (one deepImageJ call for a whole stack, two outputs) has its own
main function in zs_deconvnet.ijm.in; its ``@SHARED@`` marker is replaced by the functions of zaugnet.ijm.in named
in :data:`SHARED_FUNCTIONS` (argument checks, the deepImageJ call and its failure detection, temporary files,
clean-up), copied with their comments, so both families run the same helpers. Standard library only.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "zaugnet.ijm.in"

#: Per macro: the template's @FIELDS@.
VARIANTS: dict[str, dict[str, str]] = {
    "zaugnet.ijm": {
        "VARIANT": "zaugnet",
        "NAME": "ZAugNet",
        "CHOICE": "the factor",
        "HEADER": """\
// zaugnet.ijm - ZAugNet z-slice interpolation of a z-stack through deepImageJ.
//
// ZAugNet predicts the slice midway between two neighbouring z-slices. For a factor 2^k this macro runs
// k passes; in each pass every neighbouring pair becomes ONE 2-channel image [slice_0, slice_1], deepImageJ
// runs our BioImage.IO package on all of them, and the predicted slices are put between the two. n slices
// become factor * (n - 1) + 1, the voxel depth is divided by the factor.""",
        "EXAMPLES": """\
//   ImageJ-linux64 --headless -batch zaugnet.ijm "model=/models/zaugnet input=/data/stack.tif factor=4 output=/data/stack_x4.tif"
//   runMacro("zaugnet.ijm", "model=/models/zaugnet factor=2");     // on the current image, result left open""",
        "KEYS": "factor (2, 4, 8, ...; default 2),",
    },
    "zaugnet_plus.ijm": {
        "VARIANT": "zaugnet+",
        "NAME": "ZAugNet+",
        "CHOICE": "the factor (or positions)",
        "HEADER": """\
// zaugnet_plus.ijm - ZAugNet+ z-slice interpolation of a z-stack through deepImageJ, at any positions.
//
// ZAugNet+ predicts the slice at a relative position z in (0, 1) between two neighbouring z-slices. For
// every gap and every position this macro makes ONE 3-channel image [slice_0, slice_1, dpm] (dpm is a
// constant plane holding z), deepImageJ runs our BioImage.IO package on all of them, and the predicted slices
// are put between the two. With factor F the positions are z = j/F (j = 1 .. F-1), n slices become
// F * (n - 1) + 1 and the voxel depth is divided by F; with a list of positions (e.g. 0.25,0.5,0.75) each gap
// gets those slices and the voxel depth written is the mean spacing (a note is printed when the positions
// are not uniform). All predictions come from original slices, so any factor is one pass.""",
        "EXAMPLES": """\
//   ImageJ-linux64 --headless -batch zaugnet_plus.ijm "model=/models/zaugnet_plus input=/data/stack.tif factor=3 output=/data/stack_x3.tif"
//   runMacro("zaugnet_plus.ijm", "model=/models/zaugnet_plus positions=0.25,0.5,0.75");  // current image""",
        "KEYS": "factor (2, 3, 4, ...; default 2) or positions (comma-separated, increasing, in (0, 1)),",
    },
    "zaugnet_c.ijm": {
        "VARIANT": "zaugnet-c",
        "NAME": "ZAugNet-C",
        "CHOICE": "the factor (or positions)",
        "HEADER": """\
// zaugnet_c.ijm - ZAugNet-C z-slice interpolation of a z-stack through deepImageJ, at any positions.
//
// ZAugNet-C predicts the slice at a relative position z in (0, 1) inside the gap between two neighbouring
// z-slices from the K slices around the gap (K = 4: the slice before, the two of the gap, the slice after):
// its output is the 4-point cubic interpolation of those slices plus a learned correction. For every gap
// and every position this macro makes ONE (K + 1)-channel image [slice_m1, slice_0, slice_1, slice_2, dpm]
// (dpm is a constant plane holding z). For the gap between slices i and i+1 (1-based) the channels are
// slices i-1, i, i+1, i+2 of the ORIGINAL stack; at the first and last gaps, where i-1 or i+2 does not exist,
// the edge slice is repeated (first gap: 1, 1, 2, 3; last gap of n slices: n-2, n-1, n, n), exactly as
// `zaugnet predict` and cubic interpolation do. deepImageJ runs our BioImage.IO package on all of them, and
// the predicted slices are put between the two. With factor F the positions are z = j/F (j = 1 .. F-1), n
// slices become F * (n - 1) + 1 and the voxel depth is divided by F; with a list of positions (e.g.
// 0.25,0.5,0.75) each gap gets those slices and the voxel depth written is the mean spacing (a note is
// printed when the positions are not uniform). K is read from the package (its input channels). The model's
// output is not clamped to its inputs' range; 8/16-bit results are clipped to the type's range.""",
        "EXAMPLES": """\
//   ImageJ-linux64 --headless -batch zaugnet_c.ijm "model=/models/zaugnet_c input=/data/stack.tif factor=3 output=/data/stack_x3.tif"
//   runMacro("zaugnet_c.ijm", "model=/models/zaugnet_c positions=0.25,0.5,0.75");  // current image""",
        "KEYS": "factor (2, 3, 4, ...; default 2) or positions (comma-separated, increasing, in (0, 1)),",
    },
}


#: The ZS-DeconvNet macro and its template (not a ZAugNet variant: its own main function).
DECONV_MACRO = "zs_deconvnet.ijm"
DECONV_TEMPLATE = HERE / "zs_deconvnet.ijm.in"
#: The functions of zaugnet.ijm.in copied into the ZS-DeconvNet macro at its ``@SHARED@`` marker, in this order.
SHARED_FUNCTIONS = (
    "zaRunDeepImageJ", "zaOpt", "zaCountExceptionWindows", "zaNewException", "zaOutputFile", "zaWaitForOutput",
    "zaDuplicate32", "zaImageIds", "zaCloseNewImages", "zaOpenInput", "zaNoGui", "zaCheckDeepImageJ", "zaIsAbsolute",
    "zaModelFolder", "zaCheckOutputPath", "zaCheckKeys", "zaCharAt", "zaArg", "zaJoin", "zaTrim", "zaStripExtension",
    "zaMakeTempDir", "zaEmptyFolder", "zaTrack", "zaWithout", "zaClose", "zaCleanup", "zaFail",
)


def functions(template: str, names: tuple[str, ...]) -> str:
    """The macro functions ``names`` of ``template``, each with the comment lines right above it, in that order."""
    lines = template.splitlines()
    blocks = []
    for name in names:
        starts = [k for k, line in enumerate(lines) if line.startswith(f"function {name}(")]
        if len(starts) != 1:
            raise ValueError(f"{TEMPLATE.name}: {len(starts)} definitions of function {name}")
        first = starts[0]
        while first > 0 and lines[first - 1].startswith("//"):
            first -= 1
        last = next(k for k in range(starts[0], len(lines)) if lines[k] == "}")
        blocks.append("\n".join(lines[first:last + 1]))
    return "\n\n".join(blocks)


def render_deconv(template: str | None = None, shared: str | None = None) -> str:
    """The text of the ZS-DeconvNet macro (:data:`DECONV_MACRO`)."""
    text = DECONV_TEMPLATE.read_text(encoding="utf-8") if template is None else template
    source = TEMPLATE.read_text(encoding="utf-8") if shared is None else shared
    text = text.replace("@SHARED@", functions(source, SHARED_FUNCTIONS)).replace("@MACRO@", DECONV_MACRO)
    left = re.findall(r"@[A-Z]+@", text)
    if left:
        raise ValueError(f"{DECONV_TEMPLATE.name}: no value for {', '.join(sorted(set(left)))}")
    return text


def render(name: str, template: str | None = None) -> str:
    """The text of macro ``name`` (a key of :data:`VARIANTS`, or :data:`DECONV_MACRO`)."""
    if name == DECONV_MACRO:
        return render_deconv(shared=template)
    text = TEMPLATE.read_text(encoding="utf-8") if template is None else template
    fields = {"MACRO": name, **VARIANTS[name]}
    for key, value in fields.items():
        text = text.replace(f"@{key}@", value)
    left = re.findall(r"@[A-Z]+@", text)
    if left:
        raise ValueError(f"{TEMPLATE.name}: no value for {', '.join(sorted(set(left)))}")
    return text


def main(argv: list[str]) -> int:
    check = argv == ["--check"]
    if argv and not check:
        print(__doc__, file=sys.stderr)
        return 2
    template = TEMPLATE.read_text(encoding="utf-8")
    stale = []
    for name in (*VARIANTS, DECONV_MACRO):
        text = render(name, template)
        path = HERE / name
        if check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
    if stale:
        print(f"not generated from {TEMPLATE.name}: {', '.join(stale)} (run python fiji_macros/generate_macros.py)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
