"""Using a trained model: predictors (PyTorch/ONNX), export, `eyelip predict` and `eyelip evaluate`."""
