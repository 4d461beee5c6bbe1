"""ser: take a fine-tuned speech-emotion model from PyTorch to a production bundle."""

__version__ = "0.1.0"
