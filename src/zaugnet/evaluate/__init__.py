"""Evaluation: the paper's protocol, and the self-check that runs it on the user's own stack.

- :mod:`.protocol`: drop slices of a high-resolution stack, predict them back, score them;
- :mod:`.selfcheck`: ``--method auto``, the protocol on the volume being augmented, choosing the method;
- :mod:`.metrics`: RMSE, PSNR, SSIM and the paper's 8-bit scale;
- :mod:`.fid`: Fréchet Inception distance from a local Inception-v3 TorchScript file.
"""
