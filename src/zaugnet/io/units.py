"""Length units: the one table for ImageJ, OME-TIFF, TIFF resolution tags and OME-Zarr (NGFF).

Units are kept in a short canonical spelling (``um``, ``nm``, ...); :func:`normalise_unit` maps the many
spellings files use (``micron``, ``µm``, ``\\u00B5m``, ``micrometer``) onto it.
"""

from __future__ import annotations

#: Canonical unit -> (its size in micrometres, its NGFF name).
UNITS: dict[str, tuple[float, str]] = {
    "pm": (1e-6, "picometer"),
    "angstrom": (1e-4, "angstrom"),
    "nm": (1e-3, "nanometer"),
    "um": (1.0, "micrometer"),
    "mm": (1e3, "millimeter"),
    "cm": (1e4, "centimeter"),
    "m": (1e6, "meter"),
    "inch": (25400.0, "inch"),
}
#: TIFF ResolutionUnit codes (4 and 5 are tifffile's non-standard extensions) -> size of the unit in um.
RESOLUTION_UNIT_IN_UM = {2: 25400.0, 3: 1e4, 4: 1e3, 5: 1.0}

_ALIASES = {
    **{name: unit for unit, (_, name) in UNITS.items()},
    **{name + "s": unit for unit, (_, name) in UNITS.items()},
    "micron": "um", "microns": "um", "micrometre": "um", "micrometres": "um",
    "nanometre": "nm", "nanometres": "nm", "millimetre": "mm", "millimetres": "mm",
    "pixels": "pixel",
}


def normalise_unit(unit: str) -> str:
    """The canonical spelling: ``"um"`` for the many spellings of micrometre, others lower-cased."""
    text = unit.strip().replace("\\u00B5", "u").replace("\\u00b5", "u")
    text = text.replace("\u00b5", "u").replace("\u03bc", "u").lower()
    return _ALIASES.get(text, text)


def size_in_um(unit: str) -> float | None:
    """How many micrometres one ``unit`` is; None for a unit that is not a length (``pixel``, unknown)."""
    found = UNITS.get(normalise_unit(unit))
    return found[0] if found else None


def ngff_unit(unit: str) -> str | None:
    """The NGFF (OME-Zarr) name of ``unit``, e.g. ``micrometer``; None if NGFF has none."""
    found = UNITS.get(normalise_unit(unit))
    return found[1] if found else None


def ome_unit(unit: str) -> str:
    """The unit as OME-XML writes it (``µm`` for micrometres)."""
    unit = normalise_unit(unit)
    return "\u00b5m" if unit == "um" else unit
