"""Export of trained students to TorchScript, ONNX and BioImage.IO packages, and loading them back.

- :func:`export_model`: ``RUN_DIR/final.pt`` -> a tested BioImage.IO package (zip or folder).
- :func:`export_deconv_model`: the same for a ZS-DeconvNet checkpoint (``zaugnet deconv train``); ``zaugnet
  export`` picks it by the checkpoint's ``kind``.
- :func:`load_interpolator`: checkpoint | package zip/folder | URL | model-zoo id -> a
  :class:`zaugnet.predict.interpolator.ModelInterpolator`.

bioimageio.core, onnx and onnxruntime are imported only when needed.
"""

from .bioimageio import export_model
from .deconv import export_deconv_model
from .load import load_interpolator

__all__ = ["export_deconv_model", "export_model", "load_interpolator"]
