"""Stage 2's threads and processes: the measurements behind how compare runs its fits.

In one run, on a feature cache's train and validation splits:

1. ``LogisticRegression`` (lbfgs) over the default C grid with BLAS on every
   core, then on one thread;
2. one ``HistGradientBoostingClassifier`` fit on the main thread, then on a
   new thread after the main thread has used OpenMP;
3. the four scikit-learn models' selections one after another in this
   process, then in two fresh loky workers, then in the same (warm) workers.

Usage (any finished cache; the figures in BENCHMARKS.md are on MobileNet 0.25
features of cats_and_dogs_filtered):

    python benchmarks/bench_threads.py cache/mobilenet_a0.25-224-avg-<hash>.h5
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from joblib import Parallel, delayed, parallel_config  # noqa: E402
from sklearn.ensemble import HistGradientBoostingClassifier  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from _cpu import cpu_line  # noqa: E402 - this folder is on sys.path when the script runs

from pipeline.features import FeatureCache  # noqa: E402
from pipeline.heads.registry import CLASSIFIERS, configure  # noqa: E402
from pipeline.compare.fitting import select  # noqa: E402


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cache", type=Path)
    args = parser.parse_args()
    print(f"CPU: {cpu_line()}")
    cache = FeatureCache(args.cache)
    train, validation = cache.load("train"), cache.load("validation")
    X = StandardScaler().fit_transform(train.features)

    def logreg_grid():
        for C in CLASSIFIERS["logreg"].grid["C"]:
            LogisticRegression(C=C, max_iter=5000).fit(X, train.labels)

    every = timed(logreg_grid)
    with threadpool_limits(limits=1, user_api="blas"):
        one = timed(logreg_grid)
    print(f"logreg, 5 C values: BLAS on every core {every:.2f} s, one thread {one:.2f} s "
          f"({every / one:.0f}x)")

    def trees():
        HistGradientBoostingClassifier(max_iter=100, early_stopping=False).fit(
            train.features, train.labels)

    main_thread = [timed(trees) for _ in range(2)]
    with ThreadPoolExecutor(max_workers=1) as executor:
        new_thread = [executor.submit(timed, trees).result() for _ in range(2)]
    print(f"hist_gbdt fit: main thread {' / '.join(f'{t:.2f}' for t in main_thread)} s, "
          f"a new thread afterwards {' / '.join(f'{t:.2f}' for t in new_thread)} s")

    names = ("hist_gbdt", "linear_svm", "logreg", "knn")
    jobs = [(n, *configure(CLASSIFIERS[n], 0, {}, None, "flatten")) for n in names]

    def in_process():
        return [select(CLASSIFIERS[n], e, g, train, validation, scoring="accuracy") for n, e, g in jobs]

    def workers():
        with parallel_config(backend="loky", inner_max_num_threads=1):
            return Parallel(n_jobs=2)(delayed(select)(CLASSIFIERS[n], e, g, train, validation,
                                                      scoring="accuracy") for n, e, g in jobs)

    print(f"four scikit-learn selections: one after another here {timed(in_process):.2f} s, "
          f"two fresh workers {timed(workers):.2f} s, the same workers again {timed(workers):.2f} s")


if __name__ == "__main__":
    main()
