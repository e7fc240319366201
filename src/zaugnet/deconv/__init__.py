"""Zero-shot 3D deconvolution (ZS-DeconvNet, issue 18): the classical core and prediction.

- :mod:`.psf`: point spread functions: a scalar pupil model (widefield, confocal) and measured bead stacks;
- :mod:`.forward`: the PSF forward model by FFT, the Hessian and gap-amending regularisers, Richardson-Lucy;
- :mod:`.predict`: a trained network (odd and even slices apart, tiles with a halo) or Richardson-Lucy on a stack,
  in the user's units;
- :mod:`.selfcheck`: the no-reference score of ``deconv predict --method auto`` (re-blurred odd slices vs even);
- :mod:`.score`: the benchmark protocol against a reference (widefield scored against confocal).
"""
