"""report.html opens in a real browser (headless Chromium): no console errors, the leaderboard,
every thumbnail decoded, a screenshot that is not blank."""

import io
import json
import re
import shutil

import numpy as np
import pytest
from conftest import keep_for_docs

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _open(report, screenshot):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        problems = []
        page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("request", lambda r: problems.append(f"network: {r.url}")
                if not r.url.startswith(("file:", "data:")) else None)
        page.goto(report.as_uri())
        page.wait_for_load_state("load")
        seen = {
            "rows": page.locator("table.leaderboard tr").count() - 1,
            "classifiers": page.locator("table.leaderboard td.name").all_inner_texts(),
            "images": page.evaluate("document.images.length"),
            "decoded": page.evaluate("Array.from(document.images).filter(i => i.naturalWidth > 0).length"),
            "thumbnails": page.evaluate("Array.from(document.images).filter("
                                        "i => i.src.startsWith('data:image/jpeg')).length"),
            "overflowing": page.evaluate("Array.from(document.querySelectorAll('td, th, figcaption'))"
                                         ".filter(e => e.scrollWidth > e.clientWidth + 1).length"),
            "too_wide": page.evaluate("Array.from(document.images).filter(i => "
                                      "i.getBoundingClientRect().right > document.documentElement.clientWidth + 1)"
                                      ".length"),
        }
        shot = page.screenshot(full_page=True)
        browser.close()
    screenshot.write_bytes(shot)
    return problems, seen


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs a real browser: apt-get install chromium "
                                              "(.ci/run installs it)")
def test_the_report_renders_in_a_real_browser(stage2_run, tmp_path):
    from PIL import Image

    report = stage2_run / "report.html"
    html = report.read_text()
    assert not re.search(r"(src|href)=\"https?:", html), "self-contained: nothing from the network"
    leaderboard = json.loads((stage2_run / "leaderboard.json").read_text())
    insights = json.loads((stage2_run / "insights.json").read_text())
    problems, seen = _open(report, tmp_path / "report.png")

    assert problems == []
    assert seen["rows"] == len(leaderboard) == 2
    assert {c.replace(" (recommended)", "") for c in seen["classifiers"]
            if c.startswith(("logreg", "dense"))} == {"logreg", "dense"}
    shown = (min(24, len(insights["near_duplicates"])) * 2 + min(24, len(insights["outliers"]))
             + min(24, len(insights["suspected_label_errors"]["issues"])))
    test = json.loads((stage2_run / "manifest.json").read_text())["splits"]["test"]
    assert shown <= seen["thumbnails"] <= shown + min(24, test)  # + the misclassified gallery
    assert seen["decoded"] == seen["images"] > seen["thumbnails"]  # every image decodes; plots too
    pixels = np.asarray(Image.open(io.BytesIO((tmp_path / "report.png").read_bytes())).convert("L"))
    assert pixels.shape[0] > 900 and pixels.std() > 20, "the screenshot shows content"
    assert pixels[-pixels.shape[0] // 3:].std() > 5, "no blank tail"
    assert seen["overflowing"] == 0, "no table cell's or caption's text overflows it"
    assert seen["too_wide"] == 0, "no image is wider than the page"
    assert report.stat().st_size < 5e6


def test_paths_in_the_report_wrap_after_slashes_only_and_captions_show_no_backticks(stage2_run):
    html = (stage2_run / "report.html").read_text()
    codes = re.findall(r"<code>(.*?)</code>", html)
    paths = [code for code in codes if "/" in code]
    assert paths and all("<wbr>" in code for code in paths)
    for code in paths:  # a break opportunity follows every / and nothing else: never inside a name
        assert re.sub(r"/<wbr>", "", code).count("<wbr>") == 0
        assert code.replace("<wbr>", "").count("/") == code.count("/<wbr>")
    assert "<code>predict --model best</code>" in html and "`" not in re.sub(r"<script.*?</script>", "", html, flags=re.S)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs a real browser: apt-get install chromium "
                                              "(.ci/run installs it)")
def test_the_labelling_loop_s_page_and_drift_section_render_in_a_real_browser(run, tmp_path):
    from conftest import COLOURS, write_image
    from pipeline import DriftConfig, SuggestConfig, drift, suggest
    from pipeline.loop.drift import record
    from pipeline.loop.suggest import write_page

    pool = tmp_path / "a pool with a very long folder name to wrap" / "new"
    for i in range(6):
        write_image(pool / f"photo.{i}.of.the.week.jpg", COLOURS["cats" if i % 2 else "dogs"], seed=i)
    page = write_page(suggest(run, pool, SuggestConfig(n=4)), tmp_path / "label.html", str(run))
    problems, seen = _open(page, tmp_path / "label.png")
    keep_for_docs(tmp_path / "label.png", "suggest.png")
    assert problems == [] and seen["thumbnails"] == seen["decoded"] == seen["images"] == 4
    assert seen["overflowing"] == 0 and seen["too_wide"] == 0
    before = _open(run / "report.html", tmp_path / "before.png")[1]["thumbnails"]
    record(drift(run, pool, DriftConfig(permutations=100)), run, str(pool), 100)
    problems, seen = _open(run / "report.html", tmp_path / "after.png")
    assert problems == [] and seen["thumbnails"] == before + 6  # the six most novel
    assert seen["decoded"] == seen["images"]
    assert seen["overflowing"] == 0 and seen["too_wide"] == 0


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.skipif(CHROMIUM is None, reason="needs a real browser: apt-get install chromium "
                                              "(.ci/run installs it)")
def test_the_real_photos_report_renders_in_a_real_browser(real_run, tmp_path):
    """The shared photos' report: no console error, every image decoded; the docs' picture of it."""
    from PIL import Image

    problems, seen = _open(real_run.run_dir / "report.html", tmp_path / "report.png")
    assert problems == []
    assert seen["rows"] == len(real_run.leaderboard) and seen["decoded"] == seen["images"] > 0
    assert seen["overflowing"] == 0 and seen["too_wide"] == 0
    pixels = np.asarray(Image.open(tmp_path / "report.png").convert("L"))
    assert pixels.shape[0] > 900 and pixels.std() > 20, "the screenshot shows content"
    keep_for_docs(tmp_path / "report.png", "report.png")
