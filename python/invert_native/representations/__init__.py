"""Representations Phi that can be inverted: layer chains with forward(x) and backward(dy)."""

from .caffenet import CaffeNet, ConvNet, ImageTransform, LayerRepresentation
from .dsift import DSIFT, dsift
from .hog import HOG, hog

__all__ = ["DSIFT", "dsift", "HOG", "hog", "CaffeNet", "ConvNet", "ImageTransform", "LayerRepresentation"]
