"""``geoseg train``: the training input, losses, the fit loop of one model, ensembles of spatial
fold models, delineation thresholds tuned on validation areas, and the model card.

``train`` is imported on first use: this package's modules load TensorFlow.
"""

__all__ = ["train"]


def __getattr__(name: str):
    if name == "train":
        from geoseg.training.trainer import train

        return train
    raise AttributeError(f"module 'geoseg.training' has no attribute {name!r}")
