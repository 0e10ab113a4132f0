"""``label``: serve the labelling page until the person is done, then say how to train with the labels.

At the end the labels are a dataset: ``--into/dataset/<split>/<class>/``
holds links to the run's own photos (each in its split) and to the copies of
the photos just labelled (in train), so that one ``run --data`` takes both;
every photo of it is in the store already, so that run computes no feature.
The run's folder records the session (``labelling.json``) and its report
gains a section: labels given, time spent, accuracy before and after.
"""

from __future__ import annotations

import logging
import os
import shlex
import threading
import webbrowser
from pathlib import Path
from typing import Callable

from ..config import LabelConfig
from .server import LabelServer
from .session import Session

log = logging.getLogger(__name__)

DATASET = "dataset"
LOCAL = ("127.0.0.1", "localhost")


def label(run: str | os.PathLike, pool: str | os.PathLike, into: str | os.PathLike,
          config: LabelConfig | None = None, say: Callable[[str], None] = print) -> dict:
    """Serve the page for a session until "done" (or Ctrl-C); returns the session's summary, with
    the dataset of the new labels and the command that trains on it.

    ``say`` gets the page's address (with its token) before anything else.
    """
    config = config or LabelConfig()
    session = Session(run, pool, into, config)
    server = LabelServer(session, config.host, config.port)
    if config.host not in LOCAL:
        log.warning("serving on %s: other machines can reach the page (it still needs its token)",
                    config.host)
    say(server.url)
    if not config.no_browser:
        webbrowser.open(server.url)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        while not server.done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
    summary = session.summary()
    dataset = write_dataset(session)
    record(session, summary)
    return {**summary, "dataset": str(dataset), "next": shlex.join(next_command(session.run, dataset))}


def next_command(run, dataset: Path) -> list[str]:
    """The ``run`` that extracts ``dataset`` under the run's own feature spec (so every photo's
    row is found in the store) and compares the run's classifiers, into a new run folder."""
    import json

    from dataclasses import fields

    from ..config import ExtractConfig

    key = run.key
    command = ["python", "run_pipeline.py", "run", "--data", str(dataset), "--cache-dir", str(run.cache_dir),
               "--out", f"{run.path}-labelled"]
    for name in (f.name for f in fields(ExtractConfig) if f.name != "weights"):  # the key holds stage 1's
        if key.get(name) is not None:
            command += ["--set", f"extract.{name}={json.dumps(key[name])}"]
    if key.get("weights_file"):
        command += ["--weights", key["weights_file"]]
    elif key.get("weights") is not None:
        command += ["--set", f"extract.weights={json.dumps(key['weights'])}"]
    return command + ["--set", f"compare.classifiers={json.dumps(run.config['classifiers'])}"]


def write_dataset(session: Session) -> Path:
    """``--into/dataset``: links to the run's photos and to the labelled copies, split by split,
    made afresh (only links live in it, and only this function writes it)."""
    import shutil

    folder = session.folder.path / DATASET
    if folder.is_symlink():
        folder.unlink()  # a link planted here: removed, its target untouched
    elif folder.is_dir():
        shutil.rmtree(folder)  # links only: their targets are untouched
    cache = session.run.cache()
    root = Path(cache.data_root)
    for split in cache.splits:
        index = cache.index(split)
        for rel, y in zip(index.paths, index.labels):
            _link(folder / split / cache.classes[y] / rel.replace("/", "__"), root / rel)
    for label, copy in session.folder.labels.values():
        _link(folder / "train" / label / ("labelled__" + Path(copy).name), session.folder.path / copy)
    return folder


def _link(at: Path, target: Path) -> None:
    at.parent.mkdir(parents=True, exist_ok=True)
    at.symlink_to(target.resolve())


def record(session: Session, summary: dict) -> None:
    """The session in the run's folder (``labelling.json``) and a section of its report."""
    from ..runs import folder, pages

    writer = folder.RunWriter.amend(session.run.path)
    with writer:
        writer.write_json(folder.LABELLING, summary)
        report = writer.path(folder.REPORT)
        if report.is_file():
            writer.write_text(folder.REPORT, pages.with_labelling(report.read_text(encoding="utf-8"), summary))
