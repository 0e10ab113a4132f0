"""Backbones: the registry of feature extractors, and building one as a Keras model."""

from .build import build, build_base, compiled_forward, gpu_strategy, preprocess_fn
from .choose import kind_of, resolve
from .registry import (BACKBONES, PREPROCESSING, Backbone, BackboneSpec, get_backbone, keras_models_dir,
                       list_backbones)

__all__ = ["BACKBONES", "PREPROCESSING", "Backbone", "BackboneSpec", "build", "build_base",
           "compiled_forward", "get_backbone", "gpu_strategy", "kind_of", "keras_models_dir", "list_backbones",
           "preprocess_fn", "resolve"]
