"""raypair: tune, reproduce and ablate image-mixing and image-pair training methods on Ray."""

__version__ = "0.1.0"
