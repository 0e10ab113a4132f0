"""Settings of each stage, as frozen dataclasses validated once."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .backbones import DEFAULT_BACKBONE
from .data import SplitConfig
from .errors import ConfigError

DTYPES = ("float32", "float16")
DECODE_MODES = ("auto", "full")


@dataclass(frozen=True)
class ExtractConfig:
    """Stage 1 settings.

    Args:
        backbone: registry name (see ``pipeline.list_backbones``).
        alpha: width multiplier for the MobileNet family (None: its default).
        image_size: input side in pixels (None: the backbone's default).
        pooling: "avg", "max" or "none" (keep the spatial feature map).
        weights: "imagenet", "none" (random, seeded) or a weights file path.
        dtype: stored feature type, "float32" or "float16".
        batch_size: images per forward pass.
        chunk_size: images per resumable unit of work; a killed run loses at
            most one chunk per split.
        decode: "auto" decodes large JPEGs at a reduced scale (1/2, 1/4 or
            1/8, never below the input size) before resizing, which is much
            faster for phone-sized photos; "full" always decodes every pixel,
            exactly as ``keras.utils.image_dataset_from_directory`` does.
        cache_dir: folder of the HDF5 feature files.
        seed: seeds random weights (``weights="none"``).
        split: how images are assigned to splits.
    """

    backbone: str = DEFAULT_BACKBONE
    alpha: float | None = None
    image_size: int | None = None
    pooling: str = "avg"
    weights: str = "imagenet"
    dtype: str = "float32"
    batch_size: int = 32
    chunk_size: int = 512
    decode: str = "auto"
    cache_dir: str = "cache"
    seed: int = 0
    split: SplitConfig = field(default_factory=SplitConfig)

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ConfigError(f"`--dtype` must be one of {', '.join(DTYPES)}. Got {self.dtype!r}.")
        if self.decode not in DECODE_MODES:
            raise ConfigError(
                f"`--decode` must be one of {', '.join(DECODE_MODES)}. Got {self.decode!r}."
            )
        for name in ("batch_size", "chunk_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"`--{name.replace('_', '-')}` must be a positive integer. Got {value!r}.")
        if self.chunk_size < self.batch_size:
            raise ConfigError(
                f"`--chunk-size` must be at least `--batch-size` ({self.batch_size}). "
                f"Got {self.chunk_size}."
            )

    @property
    def cache_path(self) -> Path:
        return Path(self.cache_dir).expanduser()
