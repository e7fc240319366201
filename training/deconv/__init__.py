"""What makes a ZS-DeconvNet (3D) model: configuration, data, the two-stage network, the loss, the trainer.

- :mod:`.config`: validated presets (``paper``, ``small``), the PSF source, saved beside every checkpoint;
- :mod:`.data`: normalised volumes, the held-out z-block, foreground patches of odd / even slices, the loss's PSF;
- :mod:`.nets`: the two-stage 3D RCAN (denoiser, then deconvolver);
- :mod:`.losses`: denoising, re-blurring (PSF by FFT), Hessian and gap-amending terms;
- :mod:`.trainer`: the loop (resume, validation, metrics.csv) in ZAugNet's run-folder layout;
- :mod:`.checkpoint`: load a checkpoint into a network without running anything from the file.

It uses the core (:mod:`zaugnet.deconv`, :mod:`zaugnet.io`); nothing in the core imports it. See
``shared/notes/ZS_DECONVNET.md`` for the method.
"""
