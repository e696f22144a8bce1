"""Shipping a trained model: ONNX/TorchScript export with parity checks, the registry gate, the MLflow pyfunc."""
