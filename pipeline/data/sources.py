"""Where the images come from: a folder, a Keras-cached dataset, tfds, or the demo.

Every source ends as a folder of images, the layout ``discover`` reads, so
extraction, fine-tuning and prediction treat them all alike and the cache key
(paths and content fingerprints) means the same thing for each.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import sys
from pathlib import Path

from .._files import keras_home, why_unreachable
from ..errors import DataSourceError, first_line
from .folders import SPLITS

log = logging.getLogger(__name__)

# name -> (public address, archive names, folder inside the archive). The first
# archive name is ours; the others are what tutorials save it as (the
# TensorFlow transfer-learning tutorial: get_file("cats_and_dogs.zip", ...)).
KERAS_DATASETS = {
    "cats_and_dogs_filtered": ("https://storage.googleapis.com/mledu-datasets/cats_and_dogs_filtered.zip",
                               ("cats_and_dogs_filtered.zip", "cats_and_dogs.zip"), "cats_and_dogs_filtered"),
    "flower_photos": ("https://storage.googleapis.com/download.tensorflow.org/example_images/flower_photos.tgz",
                      ("flower_photos.tgz",), "flower_photos"),
}
PNG_SIGNATURE = b"\x89PNG"
_ALTERNATIVES = ("run on your own images with `--data DIR` (one folder per class), "
                 "or see the whole tool work offline with `--demo`")


def resolve(data: str, cache_dir: Path) -> Path:
    """The image folder of a ``run`` data setting.

    Args:
        data: a folder; ``keras:<name>`` (see ``KERAS_DATASETS``);
            ``tfds:<name>``; or ``demo``.
        cache_dir: where generated and tfds images are written.

    Raises:
        DataSourceError: the dataset cannot be obtained; the message says
            where it was looked for and what to do instead.
    """
    kind, sep, name = data.partition(":")
    if data == "demo":
        from .demo import make_demo

        return make_demo(cache_dir / "demo-images")
    if sep and kind == "keras":
        return keras_dataset(name)
    if sep and kind == "tfds":
        return tfds_dataset(name, cache_dir / "tfds")
    return Path(data).expanduser()


def keras_dataset(name: str, timeout: float = 30.0) -> Path:
    """A dataset from the Keras cache, downloaded there by ``keras.utils.get_file`` if missing."""
    if name not in KERAS_DATASETS:
        raise DataSourceError(f"`--data keras:NAME` knows {', '.join(KERAS_DATASETS)}. Got {name!r}.")
    origin, archives, inner = KERAS_DATASETS[name]
    archive = archives[0]
    datasets = keras_home() / "datasets"
    # Keras 3 extracts into <stem>_extracted/; Keras 2 (and the tutorials
    # written for it) next to the archive.
    places = [datasets / f"{a.split('.')[0]}_extracted" / inner for a in archives] + [datasets / inner]
    for place in places:
        if place.is_dir():
            return place
    for candidate in archives:  # downloaded but never extracted: no network needed
        if (datasets / candidate).is_file():
            return _unpack(datasets / candidate, inner)
    def failed(why: str) -> DataSourceError:
        return DataSourceError(
            f"Could not obtain the dataset {name}: it is not in the Keras cache (looked for "
            f"{places[0]} and {places[1]}) and downloading {origin} failed ({why}). Fix: "
            f"connect once so Keras can download it, or put the extracted {inner} folder at "
            f"{places[0]}; or {_ALTERNATIVES}.")

    unreachable = why_unreachable(origin, timeout)
    if unreachable:  # said before Keras's downloader starts, so it prints nothing offline
        raise failed(unreachable)
    import keras

    log.info("downloading %s from %s into %s", name, origin, datasets)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # Keras's downloader prints on stdout
            extracted = Path(keras.utils.get_file(archive, origin, extract=True,
                                                  cache_dir=str(keras_home())))
    except Exception as exc:  # urllib, zipfile and OSError all end here
        raise failed(first_line(exc)) from None
    finally:
        socket.setdefaulttimeout(previous)
    return extracted / inner


def _unpack(archive: Path, inner: str) -> Path:
    """Extract a Keras-cached archive where Keras 3 would (``<stem>_extracted/``), atomically."""
    target = archive.with_name(f"{archive.name.split('.')[0]}_extracted")
    staging = archive.with_name(f".{target.name}.tmp-{os.getpid()}")
    log.info("extracting %s into %s", archive, target)
    try:
        shutil.unpack_archive(archive, staging)
        os.replace(staging, target)
    except (OSError, ValueError, EOFError) as exc:  # shutil.ReadError is an OSError
        raise DataSourceError(
            f"{archive} is in the Keras cache but could not be extracted ({first_line(exc)}). "
            f"Fix: delete it so it is downloaded again, or put the extracted {inner} folder at "
            f"{target / inner}.") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not (target / inner).is_dir():
        raise DataSourceError(f"{archive} holds no {inner} folder. Fix: delete it so it is "
                              "downloaded again, or pass the image folder with `--data DIR`.")
    return target / inner


def tfds_dataset(name: str, folder: Path) -> Path:
    """A TensorFlow Datasets set written once as image files under ``folder/<name>``.

    Each example's encoded bytes are written as they are (no re-encoding),
    to ``<split>/<class name>/<index>.<jpg|png>``; a set with a train split
    only becomes class folders, split by the usual hash.
    """
    target = folder / name
    if target.is_dir():
        return target
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise DataSourceError(
            f"`--data tfds:{name}` needs TensorFlow Datasets, which is not installed. "
            "Fix: pip install -e \".[tfds]\"."
        ) from None
    try:
        builder = tfds.builder(name)
        builder.download_and_prepare()
    except Exception as exc:  # unknown name, no network, a failed download
        raise DataSourceError(
            f"Could not obtain the TensorFlow Datasets set {name!r} (looked in "
            f"{os.environ.get('TFDS_DATA_DIR', '~/tensorflow_datasets')}): {first_line(exc)}. "
            "Fix: check the name at tensorflow.org/datasets/catalog and connect once to "
            f"download it; or {_ALTERNATIVES}."
        ) from None
    features = builder.info.features
    if "image" not in features or "label" not in features:
        raise DataSourceError(f"tfds:{name} has no image and label features (it has "
                              f"{', '.join(features)}); the pipeline needs labelled images.")
    classes = features["label"].names
    # tfds's mock data (tfds.testing.mock_data) declares no split list.
    splits = [s for s in SPLITS if s in builder.info.splits] or list(SPLITS)
    tmp = folder / f"{name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    for split in splits:
        prefix = tmp / split if len(splits) > 1 else tmp
        dataset = builder.as_dataset(split=split, decoders={"image": tfds.decode.SkipDecoding()})
        for i, example in enumerate(dataset.as_numpy_iterator()):
            data = example["image"]
            suffix = ".png" if data.startswith(PNG_SIGNATURE) else ".jpg"
            path = prefix / classes[int(example["label"])] / f"{i:06d}{suffix}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    os.replace(tmp, target)
    return target
