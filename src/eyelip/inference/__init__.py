"""Running a trained model on photos: PyTorch/ONNX predictors and `eyelip predict` (no training code)."""
