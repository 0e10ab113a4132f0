"""The labelling page's turnaround on the shared photos: a batch answered, the head retrained on
stored features and the next batch chosen, as the page waits for it.

1. A run from the first 600 training photos of each class (and every validation
   photo), and a pool of 40 other training photos of each class; every photo's
   features go to the store first, as a user's earlier extraction left them.
2. The run's replay, on all 2000 training photos, at 1200, 1212, 1224, 1236 and
   1248 labels: what the strategy is expected to give at the session's label
   counts.
3. ``label``'s server, answered over HTTP as the page does: each photo labelled
   with its true class, batches of 12. For the request that completes a batch
   (retrain and next batch, then the answer): its wall time; and the validation
   accuracy after 12, 24, 36 and 48 labels against the replay's.
4. With ``--screenshot FILE``, the page in headless Chromium, for the docs.

Usage (the real data and weights are in ../shared; see its README):

    KERAS_HOME=... python benchmarks/bench_label.py --data ../shared/data/cats_and_dogs_filtered
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from _cpu import cpu_line  # this folder is on sys.path when the script runs

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def cli(*args: str) -> str:
    done = subprocess.run([sys.executable, str(ROOT / "run_pipeline.py"), *args], capture_output=True,
                          text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if done.returncode:
        sys.exit(f"{args[0]} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def layout(data: Path, work: Path, per_class: int, pool_per_class: int) -> tuple[Path, Path, dict]:
    """Links: ``labelled/`` (train: the first ``per_class`` of each class; all of validation) and
    ``pool/`` (the next ``pool_per_class`` of each class); and each pool photo's true class."""
    truth = {}
    for split in ("train", "validation"):
        for folder in sorted((data / split).iterdir()):
            photos = sorted(folder.iterdir())
            chosen = photos[:per_class] if split == "train" else photos
            target = work / "labelled" / split / folder.name
            target.mkdir(parents=True)
            for photo in chosen:
                (target / photo.name).symlink_to(photo)
            if split == "train":
                (work / "pool").mkdir(exist_ok=True)
                for photo in photos[per_class:per_class + pool_per_class]:
                    (work / "pool" / photo.name).symlink_to(photo)
                    truth[photo.name] = folder.name
    return work / "labelled", work / "pool", truth


def post(base: str, token: str, action: str, body: dict) -> dict:
    request = urllib.request.Request(f"{base}/api/{action}?token={token}", data=json.dumps(body).encode(),
                                     method="POST", headers={"X-Label-Token": token})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def screenshot(url: str, path: Path) -> None:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.goto(url)
        page.wait_for_function("document.querySelectorAll('#batch img').length > 0 && "
                               "Array.from(document.images).every(i => i.complete)")
        page.locator("li.current").get_by_role("button", name="cats").focus()
        page.screenshot(path=str(path), full_page=False)
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--per-class", type=int, default=600)
    parser.add_argument("--pool-per-class", type=int, default=40)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--n", type=int, default=12)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--screenshot", type=Path)
    args = parser.parse_args()
    print(f"CPU: {cpu_line()}", flush=True)
    from pipeline.config import LabelConfig
    from pipeline.loop.server import LabelServer
    from pipeline.loop.session import Session

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        labelled, pool, truth = layout(args.data.resolve(), work, args.per_class, args.pool_per_class)
        cache = str(work / "cache")
        full = json.loads(cli("extract", "--data", str(args.data), "--cache-dir", cache, "--no-progress",
                              "--json"))["cache"]  # every photo in the store
        view = json.loads(cli("extract", "--data", str(labelled), "--cache-dir", cache, "--no-progress",
                              "--json"))["cache"]
        run = work / "run"
        cli("compare", "--features", view, "--classifiers", "logreg", "--out", str(run))
        train = 2 * args.per_class
        budgets = ",".join(str(train + args.n * k) for k in range(args.batches + 1))
        cli("replay", "--features", full, "--budgets", budgets, "--step", str(args.n), "--seeds",
            str(args.seeds), "--out", str(run))
        start = time.perf_counter()
        session = Session(run, pool, work / "into", LabelConfig(n=args.n, no_browser=True))
        print(f"session opened in {time.perf_counter() - start:.2f} s (run, pool of {len(session.photos)} "
              f"photos, strategy {session.strategy_name} from the {session.chosen_by})", flush=True)
        server = LabelServer(session, "127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_port}"
        if args.screenshot:
            screenshot(server.url, args.screenshot)
        walls, rows = [], []
        state = json.loads(urllib.request.urlopen(f"{base}/api/state?token={server.token}").read())
        rows.append(state)
        for _ in range(args.batches):
            batch = state["batch"]
            for item in batch[:-1]:
                state = post(base, server.token, "label", {"id": item["id"], "label": truth[item["name"]]})
            t = time.perf_counter()
            state = post(base, server.token, "label", {"id": batch[-1]["id"], "label": truth[batch[-1]["name"]]})
            walls.append(time.perf_counter() - t)
            rows.append(state)
        server.shutdown()
        server.server_close()
    print(f"the request that completes a batch (retrain, next batch, answer): median "
          f"{statistics.median(walls) * 1000:.0f} ms, max {max(walls) * 1000:.0f} ms over {len(walls)} "
          f"batches; the server's own retrain and next batch: {rows[-1]['seconds'] * 1000:.0f} ms (last)")
    for row in rows:
        a, replay = row["accuracy"], row["replay"] or {}
        expected = f"{replay['expected']:.4f}" if "expected" in replay else "-"
        print(f"  {row['given']:>3} new labels: validation accuracy {a['accuracy']:.4f} "
              f"[{a['interval'][0]:.4f}, {a['interval'][1]:.4f}], {a['change']:+.4f} from the run's; "
              f"replay ({replay.get('strategy', '-')}) expected {expected}")


if __name__ == "__main__":
    main()
