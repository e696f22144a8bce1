"""Scoring a trained model on held-out data: the evaluate stage's metrics and reports, `eyelip evaluate`."""
