"""What a person waits for between two experiments: whole commands on stored features.

In one run, alternated round by round, each command in its own process (its
imports counted, as a user sees them):

- ``python -c "import tensorflow"``, the floor of any command that needs it;
- ``suggest`` and ``drift`` against a run, on a pool whose features the store
  holds (the run is made from the training photos and half the validation
  photos; the other half is the pool);
- ``compare`` with every default classifier, and with the former five
  (the defaults and the gradient-boosted trees);
- the main job cold (``run`` into a fresh cache folder: stage 1 on every
  photo, then stage 2), against the plain Keras loop as a whole process
  (import, build MobileNet, ``image_dataset_from_directory`` -> ``predict``).

Usage (the real data and weights are in ../shared; see its README):

    KERAS_HOME=... python benchmarks/bench_turnaround.py --data ../shared/data/cats_and_dogs_filtered
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _cpu import cpu_line  # this folder is on sys.path when the script runs

ROOT = Path(__file__).resolve().parents[1]


def timed(args: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if done.returncode:
        sys.exit(f"{' '.join(args[:3])} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def linked_split(data: Path, work: Path) -> tuple[Path, Path]:
    """``work/labelled``: train and the first half of each validation class; ``work/pool``: the rest.
    Links, so nothing is copied and the store knows every photo by its bytes."""
    for split in ("train", "validation"):
        for folder in sorted((data / split).iterdir()):
            photos = sorted(folder.iterdir())
            half = len(photos) // 2 if split == "validation" else len(photos)
            for group, chosen in (("labelled", photos[:half]), ("pool", photos[half:])):
                target = work / group / (split if group == "labelled" else "") / folder.name
                target.mkdir(parents=True, exist_ok=True)
                for photo in chosen:
                    (target / photo.name).symlink_to(photo)
    return work / "labelled", work / "pool"


KERAS_LOOP = """
import sys, keras
model = keras.applications.MobileNet(alpha=0.25, include_top=False, pooling="avg", weights="imagenet",
                                     input_shape=(224, 224, 3))
for split in ("train", "validation"):
    data = keras.utils.image_dataset_from_directory(sys.argv[1] + "/" + split, image_size=(224, 224),
                                                    batch_size=32, shuffle=False, verbose=False)
    data = data.map(lambda x, y: keras.applications.mobilenet.preprocess_input(x))
    model.predict(data, verbose=0)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--old-list", default="logreg,dense,linear_svm,knn,hist_gbdt")
    args = parser.parse_args()
    print(f"CPU: {cpu_line()}", flush=True)
    cli = str(ROOT / "run_pipeline.py")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        labelled, pool = linked_split(args.data.resolve(), work)
        cache = str(work / "cache")
        subprocess.run([sys.executable, cli, "extract", "--data", str(args.data), "--cache-dir", cache,
                        "--no-progress"], check=True, capture_output=True)  # every photo in the store
        done = subprocess.run([sys.executable, cli, "extract", "--data", str(labelled), "--cache-dir",
                               cache, "--no-progress", "--json"], check=True, capture_output=True, text=True)
        view = json.loads(done.stdout)["cache"]
        run = str(work / "run")
        subprocess.run([sys.executable, cli, "compare", "--features", view, "--out", run], check=True,
                       capture_output=True)
        commands = {
            "import tensorflow": ["-c", "import tensorflow"],
            "suggest": [cli, "suggest", "--run", run, "--pool", str(pool), "--n", "20"],
            "suggest (typiclust, 50)": [cli, "suggest", "--run", run, "--pool", str(pool), "--n", "50",
                                        "--strategy", "typiclust"],
            "drift": [cli, "drift", "--run", run, "--batch", str(pool), "--no-record"],
            "compare (defaults)": [cli, "compare", "--features", view, "--out", str(work / "c-new"),
                                   "--overwrite"],
            "compare (former five)": [cli, "compare", "--features", view, "--out", str(work / "c-old"),
                                      "--overwrite", "--classifiers", args.old_list],
        }
        commands["plain Keras loop"] = ["-c", KERAS_LOOP, str(args.data)]
        walls: dict[str, list[float]] = {name: [] for name in [*commands, "main job cold"]}
        for k in range(args.rounds):
            for name, command in commands.items():
                walls[name].append(timed(command))
            walls["main job cold"].append(timed([cli, "run", "--data", str(args.data), "--cache-dir",
                                                 str(work / f"cold{k}"), "--out", str(work / f"job{k}"),
                                                 "--no-progress"]))
            tf = walls["import tensorflow"][-1]
            print(f"round {k + 1}: " + ", ".join(f"{name} {w[-1]:.2f} s" for name, w in walls.items())
                  + f"; suggest / import tensorflow {walls['suggest'][-1] / tf:.2f}, drift / import "
                  f"tensorflow {walls['drift'][-1] / tf:.2f}, compare defaults / former "
                  f"{walls['compare (defaults)'][-1] / walls['compare (former five)'][-1]:.2f}, main job / Keras loop "
                  f"{walls['main job cold'][-1] / walls['plain Keras loop'][-1]:.2f}, compare / Keras loop "
                  f"{walls['compare (defaults)'][-1] / walls['plain Keras loop'][-1]:.2f}", flush=True)
        for name, w in walls.items():
            print(f"median {name}: {statistics.median(w):.2f} s")


if __name__ == "__main__":
    main()
