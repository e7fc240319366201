"""Stacks in and out, in the user's units, dtype and voxel size.

- :mod:`.tiff`: TIFF / OME-TIFF / ImageJ hyperstacks read and written whole (axes, dtype, calibration,
  ImageJ metadata), bounded before decoding;
- :mod:`.omezarr`: OME-Zarr (NGFF 0.4, reads 0.5) and memory-mapped TIFFs for volumes larger than memory;
- :mod:`.units`: the one table of length units (ImageJ, OME, NGFF names).
"""
