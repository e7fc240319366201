"""What makes a model: configuration, training data, networks, losses, the trainer and checkpoints.

- :mod:`.config`: validated presets and overrides, saved beside every checkpoint;
- :mod:`.data`: triplets from high-resolution stacks, the split, crops and augmentation;
- :mod:`.nets`: the student (ZAugNet, ZAugNet+, ZAugNet-C), the teacher and the critic;
- :mod:`.losses`: Laplacian-pyramid and WGAN-GP losses;
- :mod:`.trainer`: the loop (DDP, AMP, resume), its run folder in :mod:`.runs`;
- :mod:`.checkpoint`: save, and load without running anything from the file.

It uses the core (:mod:`zaugnet.io`, :mod:`zaugnet.gaps`, ...); nothing in the core imports it.
"""
