"""The U-Net, its losses and metrics, and the model file (checkpoint) that carries it."""
