"""transfer-vs-scratch: fine-tune a pretrained network or train from scratch? Measured on your data."""

__version__ = "0.1.0"
