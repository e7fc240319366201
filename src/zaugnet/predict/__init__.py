"""Prediction: where the new slices go and how they are made.

- :mod:`.plan`: the z plan (a factor, relative positions or a target spacing -> fractional positions);
- :mod:`.interpolator`: a trained network as an interpolator (the gaps contract, tiles, units);
- :mod:`.baselines`: classical axial interpolation (linear, Keys cubic);
- :mod:`.volume`: a volume's and a stack's new slices by any method (a method may resolve itself per volume,
  as ``--method auto`` does);
- :mod:`.outofcore`: OME-Zarr out of core, block by block (each block through the interpolator), resumable.
"""
