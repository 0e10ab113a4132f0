"""label: a local page where a person labels suggested photos; nothing lost, only its user let in."""

import csv
import hashlib
import json
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import COLOURS, write_image
from pipeline.config import LabelConfig
from pipeline.errors import ConfigError
from pipeline.data.files import fingerprint_file
from pipeline.loop.labels import LABELS, MARKER, LabelFolder, _check
from pipeline.loop.server import LabelServer
from pipeline.loop.session import Session


@pytest.fixture
def pool(tmp_path):
    """Eight new photos, four of each colour."""
    folder = tmp_path / "pool"
    folder.mkdir()
    for i in range(8):
        write_image(folder / f"new{i}.jpg", COLOURS["cats" if i % 2 else "dogs"], seed=700 + i)
    return folder


def _digests(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _print(path) -> str:
    return fingerprint_file(str(path), 2**30)


def test_the_label_folder_keeps_every_label_and_undo_on_disk_and_reads_them_back(tmp_path, pool):
    into = tmp_path / "into"
    folder = LabelFolder.open(into, ["cats", "dogs"])
    photos = sorted(pool.iterdir())
    a, b, c = (_print(p) for p in photos[:3])
    folder.add(a, str(photos[0]), "cats", 2**30)
    folder.add(b, str(photos[1]), "dogs", 2**30)
    folder.add(c, str(photos[2]), "dogs", 2**30)
    assert folder.undo() == c
    assert not (into / "dogs" / photos[2].name).exists()  # the copy it made is removed
    assert (into / "cats" / photos[0].name).read_bytes() == photos[0].read_bytes()
    rows = list(csv.DictReader((into / LABELS).open()))
    assert [(r["action"], r["fingerprint"], r["label"]) for r in rows] == [
        ("label", a, "cats"), ("label", b, "dogs"), ("label", c, "dogs"), ("undo", c, "dogs")]
    text = (into / LABELS).read_text()
    flipped = text.replace(f"{b},dogs", f"{b},cats")  # a byte that changed on disk
    (into / LABELS).write_text(flipped + "17.0,label,dddd")  # and a line torn by a kill
    folder.close()
    again = LabelFolder.open(into, ["cats", "dogs"])
    assert again.labels == {a: ("cats", f"cats/{photos[0].name}")}  # the changed line is not taken
    assert (into / MARKER).is_file()


def test_a_photo_that_changed_since_its_features_is_not_labelled(tmp_path, pool):
    from pipeline.loop.labels import Changed

    folder = LabelFolder.open(tmp_path / "into", ["cats", "dogs"])
    photo = sorted(pool.iterdir())[0]
    fingerprint = _print(photo)
    photo.write_bytes(photo.read_bytes() + b"edited")  # changed after its features were computed
    with pytest.raises(Changed, match=r"changed since its features were computed; it was not labelled"):
        folder.add(fingerprint, str(photo), "cats", 2**30)
    assert folder.labels == {} and not list((tmp_path / "into").glob("cats/*"))
    assert not (tmp_path / "into" / LABELS).exists()


def test_a_marker_planted_as_a_link_is_refused(tmp_path):
    into = tmp_path / "into"
    into.mkdir()
    (tmp_path / "theirs.txt").write_text("a person's file")
    os.symlink(tmp_path / "theirs.txt", into / MARKER)
    with pytest.raises(ConfigError, match=r"is a link, planted where `label` keeps its marker"):
        LabelFolder.open(into, ["cats"])
    assert (tmp_path / "theirs.txt").read_text() == "a person's file"


def test_a_second_session_on_the_same_folder_is_refused(tmp_path):
    import subprocess
    import sys

    into = tmp_path / "into"
    held = subprocess.Popen([sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[1]); "
                             "from pipeline.loop.labels import LabelFolder; "
                             "LabelFolder.open(sys.argv[2], ['cats']); print('held', flush=True); time.sleep(60)",
                             str(Path(__file__).resolve().parents[2]), str(into)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert held.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=r"Another `label` is using `(--)?into` .*into; two sessions"):
            LabelFolder.open(into, ["cats"])
    finally:
        held.kill()
        held.wait()
    LabelFolder.open(into, ["cats"])  # the lock went with its process


def test_into_must_be_new_empty_or_written_by_label(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("a person's file")
    with pytest.raises(ConfigError, match=r"`(--)?into` .*mine holds files `label` did not write, and the "
                                          r"pipeline never writes into a folder of the user's\. Fix:"):
        LabelFolder.open(mine, ["cats", "dogs"])
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    (tmp_path / "empty").mkdir()
    LabelFolder.open(tmp_path / "empty", ["cats"])
    os.symlink(mine, tmp_path / "link")
    with pytest.raises(ConfigError, match=r"`(--)?into` .*link is not a folder \(a file or a link\)"):
        LabelFolder.open(tmp_path / "link", ["cats"])


def test_into_inside_the_run_is_refused_before_any_work(run, pool):
    with pytest.raises(ConfigError, match=r"`(--)?into` .* is inside run .*, which the session adds its "
                                          r"record to"):
        Session(run, pool, run / "labels", LabelConfig(no_browser=True))
    assert not (run / "labels").exists()


def test_a_folder_of_the_user_s_as_into_is_refused_before_the_pool_costs_anything(run, pool, tmp_path,
                                                                                  monkeypatch):
    from pipeline.runs.run import Run

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("a person's file")
    monkeypatch.setattr(Run, "images", lambda *a, **k: pytest.fail("the pool was read first"))
    with pytest.raises(ConfigError, match=r"holds files `label` did not write"):
        Session(run, pool, mine, LabelConfig(no_browser=True))
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


def _config(**kwargs):
    return LabelConfig(n=kwargs.pop("n", 4), no_browser=True, **kwargs)


def test_a_session_retrains_after_each_batch_and_resumes_without_offering_a_labelled_photo(run, pool, tmp_path):
    before = _digests(pool)
    into = tmp_path / "into"
    session = Session(run, pool, into, _config(strategy="margin"))
    first = [item["id"] for item in session.batch]
    assert len(first) == 4 and session.state()["given"] == 0
    for item in session.batch[:3]:
        session.label(item["id"], "cats" if "1" in item["name"] or "3" in item["name"] else "dogs")
    session.skip(first[3])
    state = session.state()
    assert state["given"] == 3 and len(state["history"]) == 2 and state["history"][1]["labels"] == 3
    assert not set(first) & {item["id"] for item in state["batch"]}  # the next batch is new photos
    assert 0 <= state["accuracy"]["interval"][0] <= state["accuracy"]["accuracy"] <= state["accuracy"]["interval"][1]
    session.label(state["batch"][0]["id"], "dogs")
    session.folder.close()
    resumed = Session(run, pool, into, _config(strategy="margin"))
    labelled = set(resumed.folder.labels)
    assert len(labelled) == 4
    offered = {resumed.photos[i["id"]].fingerprint for i in resumed.batch}
    assert not offered & labelled
    assert _digests(pool) == before  # the pool's files are only read


@pytest.fixture
def server(run, pool, tmp_path):
    session = Session(run, pool, tmp_path / "into", _config())
    server = LabelServer(session, "127.0.0.1", 0)
    import threading

    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def _request(server, path, token=True, host=None, method="GET", body=None, header=True):
    url = f"http://127.0.0.1:{server.server_port}{path}"
    if token:
        url += ("&" if "?" in path else "?") + f"token={server.token}"
    request = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode())
    request.add_header("Host", host or f"127.0.0.1:{server.server_port}")
    if header and method == "POST":
        request.add_header("X-Label-Token", server.token)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read(), response.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers


def test_only_its_user_reaches_the_page(server):
    assert _request(server, "/", token=False)[0] == 403
    assert _request(server, "/", host="evil.example:80")[0] == 403  # DNS rebinding
    assert _request(server, "/", host=f"localhost:{server.server_port}")[0] == 200
    status, page, headers = _request(server, "/")
    assert status == 200 and server.token.encode() in page
    cookie = headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert _request(server, "/photo/99999")[0] == 404  # not an id of the session
    assert _request(server, "/photo/..%2F..%2Fetc%2Fpasswd")[0] == 404
    status, photo, headers = _request(server, "/photo/0")
    assert status == 200 and photo[:2] == b"\xff\xd8"  # a JPEG thumbnail
    assert headers["Cache-Control"].startswith("private") and _request(server, "/photo/0")[1] == photo
    assert list(server.session.thumbnails) == [0]  # made once, however often the page asks
    batch = json.loads(_request(server, "/api/state")[1])["batch"]
    assert all(item["src"] == f"/photo/{item['id']}?content={server.session.photos[item['id']].fingerprint}"
               for item in batch)  # a cached copy can only be of the photo the address names
    item = json.loads(_request(server, "/api/state")[1])["batch"][0]
    assert _request(server, "/api/label", method="POST", body={"id": item["id"], "label": "cats"},
                    header=False)[0] == 403  # a change needs the token in its header
    assert _request(server, "/api/label", method="POST", body={"id": 99999, "label": "cats"})[0] == 404
    assert _request(server, "/api/label", method="POST", body={"id": item["id"], "label": "horses"})[0] == 400
    status, body, _ = _request(server, "/api/label", method="POST", body={"id": item["id"], "label": "cats"})
    assert status == 200 and json.loads(body)["given"] == 1
    assert _request(server, "/static/label.js")[0] == 200  # served from the package: works offline


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ROOT = Path(__file__).resolve().parents[2]


def _start(run, pool, into):
    """``label`` as a user runs it; returns the process and the address it printed first."""
    import subprocess
    import sys

    process = subprocess.Popen(
        [sys.executable, str(ROOT / "run_pipeline.py"), "label", "--run", str(run), "--pool", str(pool),
         "--into", str(into), "--n", "4", "--strategy", "margin", "--no-browser"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    url = process.stdout.readline().strip()
    assert url.startswith("http://127.0.0.1:") and "/?token=" in url, process.stderr.read()
    return process, url


def _labels(into: Path) -> list[tuple[str, str]]:
    return [(r["action"], r["label"]) for r in csv.DictReader((into / LABELS).open())]


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs a real browser: apt-get install chromium "
                                              "(.ci/run installs it)")
def test_a_person_labels_by_clicks_and_keys_and_a_killed_server_loses_nothing(run, pool, tmp_path):
    import shlex
    import signal
    import subprocess
    import sys

    from playwright.sync_api import expect, sync_playwright

    before, into = _digests(pool), tmp_path / "into"
    process, url = _start(run, pool, into)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            problems = []
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
            page.on("request", lambda r: problems.append(f"network: {r.url}")
                    if not r.url.startswith((url.split("/?")[0], "data:")) else None)
            page.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None)
            page.goto(url)
            status = page.locator("#status")
            expect(status).to_contain_text("4 of 4 photos of this batch left")
            current = page.locator("li.current")
            current.get_by_role("button", name="cats").click()  # a real button, named by its class
            expect(status).to_contain_text("3 of 4")
            current.get_by_role("button", name="dogs").click()
            expect(status).to_contain_text("2 of 4")
            page.keyboard.press("1")  # cats
            expect(status).to_contain_text("1 of 4")
            page.keyboard.press("2")  # dogs: the batch is done, the head retrains, a new batch comes
            expect(status).to_contain_text("4 of 4")
            expect(page.locator("#accuracy")).to_contain_text("with 4 new labels")
            page.keyboard.press("s")
            page.keyboard.press("2")
            expect(status).to_contain_text("2 of 4")
            page.keyboard.press("u")  # the last label taken back: its photo waits again
            expect(status).to_contain_text("3 of 4")
            page.screenshot(path=str(tmp_path / "label.png"), full_page=True)
            browser.close()
        assert problems == []
        assert _labels(into) == [("label", "cats"), ("label", "dogs"), ("label", "cats"), ("label", "dogs"),
                                 ("label", "dogs"), ("undo", "dogs")]
        copies = sorted(p.relative_to(into).parts[0] for p in into.glob("*/*.jpg"))
        assert copies == ["cats", "cats", "dogs", "dogs"]
        process.send_signal(signal.SIGKILL)  # no chance to tidy up
        process.wait(timeout=30)
        reopened = LabelFolder.open(into, ["cats", "dogs"])
        kept = reopened.labels
        reopened.close()
        assert len(kept) == 4
        process, url = _start(run, pool, into)
        state = json.loads(urllib.request.urlopen(url.replace("/?", "/api/state?"), timeout=30).read())
        offered = {item["name"] for item in state["batch"]}
        labelled = {Path(copy).name for _, copy in kept.values()}
        assert state["given"] == 4 and offered and not offered & labelled  # nothing offered again
        request = urllib.request.Request(url.replace("/?", "/api/done?"), data=b"{}", method="POST",
                                         headers={"X-Label-Token": url.split("token=")[1]})
        urllib.request.urlopen(request, timeout=30).read()
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        assert "4 labels in" in out and "run_pipeline.py run --data" in out
        dataset = into / "dataset"
        assert len(list((dataset / "train").glob("*/labelled__*"))) == 4
        command = shlex.split(out.strip().splitlines()[-1])  # the printed command, as a user runs it
        assert command[:3] == ["python", "run_pipeline.py", "run"]
        done = subprocess.run([sys.executable, str(ROOT / "run_pipeline.py"), *command[2:], "--json",
                               "--no-progress"], capture_output=True, text=True, timeout=600,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        assert done.returncode == 0, done.stderr[-2000:]
        trained = json.loads(done.stdout)
        assert "stage 1: decode the images and run the network" not in trained["phases"]  # no forward pass
        labelled = json.loads(Path(trained["run_dir"], "manifest.json").read_text())["splits"]["train"]
        assert labelled == json.loads((run / "manifest.json").read_text())["splits"]["train"] + 4
        report = (run / "report.html").read_text()
        assert '<section id="labelling">' in report and "4 new labels" in report
        assert json.loads((run / "labelling.json").read_text())["labels"] == 4
    finally:
        if process.poll() is None:
            process.kill()
    assert _digests(pool) == before


def test_a_tampered_or_planted_label_folder_never_reaches_a_file_outside_it(tmp_path, pool):
    into, outside = tmp_path / "into", tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.jpg").write_bytes(b"a person's photo")
    folder = LabelFolder.open(into, ["cats", "dogs"])
    photos = sorted(pool.iterdir())
    taken = into / "cats" / photos[0].name
    taken.parent.mkdir()
    taken.write_bytes(b"planted")  # a file where the copy would go: kept, the copy takes another name
    a = _print(photos[0])
    copy = folder.add(a, str(photos[0]), "cats", 2**30)
    assert taken.read_bytes() == b"planted" and copy != f"cats/{photos[0].name}"
    assert (into / copy).read_bytes() == photos[0].read_bytes()
    values = ["1.0", "label", "b" * 32, "dogs", "../outside/keep.jpg", "x"]
    with (into / LABELS).open("a") as f:  # a line pointing outside, its checksum right: as if forged
        f.write(",".join([*values, _check(values)]) + "\n")
    folder.close()
    again = LabelFolder.open(into, ["cats", "dogs"])
    assert list(again.labels) == [a]
    again.undo()
    again.undo()  # nothing left to undo: the tampered line was never taken
    assert (outside / "keep.jpg").read_bytes() == b"a person's photo"
    os.symlink(outside, into / "dogs")  # a link planted where a class folder goes
    with pytest.raises(ConfigError, match=r"dogs is a link, planted in a folder `label` wrote"):
        again.add(_print(photos[1]), str(photos[1]), "dogs", 2**30)
    assert sorted(p.name for p in outside.iterdir()) == ["keep.jpg"]


def test_a_photo_changed_under_the_page_is_neither_shown_nor_labelled(server):
    item = json.loads(_request(server, "/api/state")[1])["batch"][0]
    photo = Path(server.session.photos[item["id"]].path)
    photo.write_bytes(photo.read_bytes() + b"edited")
    status, said, _ = _request(server, f"/photo/{item['id']}")
    assert status == 409 and b"changed since its features were computed" in said
    status, said, _ = _request(server, "/api/label", method="POST", body={"id": item["id"], "label": "cats"})
    assert status == 409 and b"it was not labelled" in said
    assert json.loads(_request(server, "/api/state")[1])["given"] == 0
