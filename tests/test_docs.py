"""The docs: the README a first page, every command they show parses with the real command line,
and the site builds strictly."""

import contextlib
import io
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def shown_commands() -> list[tuple[str, str]]:
    """Every ``python run_pipeline.py ...`` line of the docs (continuations joined), with its page."""
    found = []
    for page in PAGES:
        lines = page.read_text(encoding="utf-8").splitlines()
        i = 0
        while i < len(lines):
            line = lines[i].strip().strip("`")
            while line.endswith("\\") and i + 1 < len(lines):
                i += 1
                line = line[:-1] + " " + lines[i].strip()
            at = line.find("python run_pipeline.py")
            if at >= 0:
                found.append((page.name, line[at:].split("`")[0]))  # prose quotes it in backticks
            i += 1
    return found


def _argv(command: str) -> list[str]:
    """The arguments as the parser gets them: comments, optional ``[...]`` parts and ``...`` out."""
    command = re.sub(r"\s#.*$", "", command)
    while re.search(r"\[[^\[\]]*\]", command):
        command = re.sub(r"\[[^\[\]]*\]", "", command)
    command = command.split("&&")[0]
    argv = [t.split("|")[0] for t in shlex.split(command)[2:] if t != "..."]  # a|b: the first stands for all
    return argv or ["run"]  # no arguments: the main job


def test_the_readme_is_a_first_page():
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 200


@pytest.mark.parametrize("page, command", shown_commands())
def test_every_command_the_docs_show_parses(page, command):
    from pipeline.cli import build_parser

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            build_parser().parse_args(_argv(command))
        except SystemExit as exc:
            assert exc.code == 0, f"{page}: {command}\n{err.getvalue()}"


def test_the_docs_show_every_command():
    from pipeline.cli.commands import COMMANDS

    shown = {_argv(c)[0] for _, c in shown_commands() if _argv(c)}
    assert set(COMMANDS) - shown == set()


@pytest.mark.skipif(shutil.which("mkdocs") is None and not (Path(sys.executable).parent / "mkdocs").exists(),
                    reason="needs the docs extra: pip install -e '.[docs]'")
def test_the_site_builds_strictly(tmp_path):
    mkdocs = Path(sys.executable).parent / "mkdocs"
    done = subprocess.run([str(mkdocs) if mkdocs.exists() else "mkdocs", "build", "--strict", "-d",
                           str(tmp_path / "site")], cwd=ROOT, capture_output=True, text=True,
                          env={**__import__("os").environ, "NO_MKDOCS_2_WARNING": "1"}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    reference = (tmp_path / "site" / "reference" / "index.html").read_text()
    assert "--mixed-precision" in reference and "--into" in reference  # generated from the parser
    assert (tmp_path / "site" / "api" / "index.html").read_text().count("extract_features") >= 1
