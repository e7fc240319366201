"""Export of trained students to TorchScript, ONNX and BioImage.IO packages (see README.md here)."""
