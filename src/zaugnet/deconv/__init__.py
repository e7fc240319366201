"""Zero-shot 3D deconvolution (ZS-DeconvNet, issue 18): the classical core the networks stand on.

- :mod:`.psf`: point spread functions: a scalar pupil model (widefield, confocal) and measured bead stacks;
- :mod:`.forward`: the PSF forward model by FFT, the Hessian and gap-amending regularisers, Richardson-Lucy;
- :mod:`.score`: the benchmark protocol against a reference (widefield scored against confocal).
"""
