"""Where images come from: folders and their splits, Keras/TFDS downloads, generated demo
images, and decoding (``pipeline.data.decode``, which imports TensorFlow)."""

from .folders import IMAGE_EXTENSIONS, SPLITS, Dataset, discover, expand, is_image_name, unit_hash

__all__ = ["IMAGE_EXTENSIONS", "SPLITS", "Dataset", "discover", "expand", "is_image_name", "unit_hash"]
