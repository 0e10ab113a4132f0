"""Stage 3's augmentation: ``"flip,rotate=0.2,zoom=0.2"`` read (without Keras, so settings are
checked before any stage runs) and built as Keras preprocessing layers."""

from __future__ import annotations

from ..errors import ConfigError

AUGMENTATIONS = ("flip", "rotate", "zoom", "translate", "shear", "contrast")
FLIPS = ("horizontal", "vertical", "horizontal_and_vertical")


def parse_augment(text: str) -> list[tuple[str, str | float]]:
    """``[(name, amount or flip mode), ...]``; ``none`` (or nothing) is no augmentation.

    Raises:
        ConfigError: an unknown name, an unknown flip mode, or an amount that is not a number.
    """
    parsed = []
    for item in [t.strip() for t in text.split(",") if t.strip() and t.strip() != "none"]:
        name, _, value = item.partition("=")
        if name not in AUGMENTATIONS:
            raise ConfigError(f"`--augment` takes {', '.join(AUGMENTATIONS)} (e.g. "
                              f"flip,rotate=0.2,zoom=0.2) or none. Got {name!r}.")
        if name == "flip":
            if value and value not in FLIPS:
                raise ConfigError(f"`--augment flip=` must be one of {', '.join(FLIPS)}. Got {value!r}.")
            parsed.append((name, value or "horizontal"))
            continue
        try:
            parsed.append((name, float(value) if value else 0.1))
        except ValueError:
            raise ConfigError(f"`--augment {name}=` must be a number. Got {value!r}.") from None
    return parsed


def augmentation(text: str, seed: int = 0):
    """Keras preprocessing layers from ``text`` (active in training only)."""
    import keras

    build = {
        "flip": lambda mode: keras.layers.RandomFlip(mode, seed=seed),
        "rotate": lambda amount: keras.layers.RandomRotation(amount, seed=seed),
        "zoom": lambda amount: keras.layers.RandomZoom(amount, seed=seed),
        "translate": lambda amount: keras.layers.RandomTranslation(amount, amount, seed=seed),
        "shear": lambda amount: keras.layers.RandomShear(amount, amount, seed=seed),
        "contrast": lambda amount: keras.layers.RandomContrast(amount, seed=seed),
    }
    return keras.Sequential([build[name](value) for name, value in parse_augment(text)],
                            name="augmentation")
