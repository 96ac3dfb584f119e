"""geoseg's version, as the chips' dataset.json and the model card record it."""

__version__ = "0.1.0"
