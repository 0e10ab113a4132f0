"""The forward pass over the images a store lacks: decoded in batches that never cross a chunk,
each finished chunk written as one store segment (used by extraction and by the loop's pools)."""

from __future__ import annotations

import logging
from collections import deque
from pathlib import Path

import numpy as np

from .. import backbones
from ..config import ExtractConfig
from .store import FeatureStore

log = logging.getLogger(__name__)


def compute_rows(engine, root: Path, chunks: list[list[tuple[str, str]]], store: FeatureStore, *,
             spec: backbones.BackboneSpec, config: ExtractConfig, tag: str, bar) -> dict[str, str]:
    """Run the backbone over ``chunks``; each finished chunk becomes one store segment.

    Images the decoder rejects are kept in the segment by the content that
    was read, with the reason. Images refused by a setting of the view (file
    size, pixel budget), or whose bytes changed since they were
    fingerprinted, are not kept: they are returned, fingerprint -> reason.
    """
    from ..data.decode import Decoding, image_batches, why_unreadable

    size = config.chunk_size
    decoding = Decoding(spec.image_size, config.decode, config.orientation, config.max_pixels,
                        config.max_file_bytes)
    # Image j of chunk k gets index k * size + j, so a chunk is `index // size`.
    indices = [k * size + j for k, chunk in enumerate(chunks) for j in range(len(chunk))]
    abs_paths = [str(root / rel) for chunk in chunks for _, rel in chunk]
    before: dict[int, str] = {}  # index -> why it was refused before decoding
    batches = image_batches(abs_paths, indices, decoding, config.batch_size,
                            expected=[fp for chunk in chunks for fp, _ in chunk], refused=before)
    todo = deque(range(len(chunks)))
    rows: dict[int, list[np.ndarray]] = {}
    feats: dict[int, list[np.ndarray]] = {}
    refused: dict[str, str] = {}

    def flush(k: int) -> None:
        got = (np.concatenate(rows.pop(k)) - k * size) if k in rows else np.zeros(0, np.int64)
        out = (np.concatenate(feats.pop(k)) if k in feats
               else np.zeros((0, *engine.feature_shape), np.float32))
        chunk = chunks[k]
        bad = {}
        for j in sorted(set(range(len(chunk))) - set(got.tolist())):
            fp, rel = chunk[j]
            if k * size + j in before:
                why, by_content = before[k * size + j], False
            else:
                found = why_unreadable(str(root / rel), decoding, expected=fp)
                why, by_content = found.reason, found.by_content
            (bad if by_content else refused)[fp] = why
            log.warning("quarantined %s: %s", rel, why)
        store.write_segment([chunk[j][0] for j in got], out.astype(config.dtype), bad, view=tag)
        bar.update(len(chunk) - len(got))

    for idx, features in engine.map(_chunk_aligned(batches, size, config.batch_size)):
        k = int(idx[0]) // size  # a batch never crosses a chunk (see _chunk_aligned)
        rows.setdefault(k, []).append(idx)
        feats.setdefault(k, []).append(features)
        bar.update(len(idx))
        last = int(idx[-1])
        while todo and todo[0] * size + len(chunks[todo[0]]) - 1 <= last:
            flush(todo.popleft())
    while todo:
        flush(todo.popleft())
    return refused


def _chunk_aligned(batches, chunk_size: int, batch_size: int):
    """Batches that never cross a chunk boundary: ``(indices, images)``.

    The decoding pipeline drops unreadable images, which would shift every
    later batch. Here each chunk is cut into batches of its own readable
    images, so an image meets the same batch-mates whether the chunk is
    computed in a whole run, a shard or a resumed run: the features are
    bit-identical (a backbone's arithmetic can depend on the batch size).
    Batches that need no regrouping (the usual case) pass through uncopied.
    """
    import tensorflow as tf

    pending: list[tuple[np.ndarray, object]] = []
    held = 0

    def emit(n: int):
        nonlocal pending, held
        idx = np.concatenate([i for i, _ in pending])
        images = pending[0][1] if len(pending) == 1 else tf.concat([x for _, x in pending], 0)
        pending = [(idx[n:], images[n:])] if n < len(idx) else []
        held = len(idx) - n
        return idx[:n], images[:n]

    for idx, images in batches:
        idx = idx.numpy()
        chunk_of = idx // chunk_size
        cuts = np.flatnonzero(np.diff(chunk_of)) + 1
        for start, stop in zip([0, *cuts], [*cuts, len(idx)]):
            part = (idx, images) if stop - start == len(idx) else (idx[start:stop], images[start:stop])
            if pending and pending[0][0][0] // chunk_size != chunk_of[start]:
                yield emit(held)  # the tail of the previous chunk
            if not pending and stop - start == batch_size:
                yield part  # the usual case: a whole batch of one chunk, not copied
                continue
            pending.append(part)
            held += stop - start
            while held >= batch_size:
                yield emit(batch_size)
    if pending:
        yield emit(held)
