"""``geoseg synth``: synthetic scenes with fields, non-field land and buildings, for demos and
tests."""

from geoseg.synthetic.scene import synth

__all__ = ["synth"]
