"""mkdocs hooks: pages made from what the repository already holds, never written twice.

- the first page is README.md;
- the command reference is the command line's own parser, option by option;
- the benchmarks page carries BENCHMARKS.md, its dated sections newest first.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def on_page_markdown(markdown: str, page, config, files) -> str:
    name = page.file.src_uri
    if name == "index.md":
        return _readme()
    if name == "reference.md":
        return markdown.replace("<!-- COMMANDS -->", _commands())
    if name == "benchmarks.md":
        return markdown.replace("<!-- BENCHMARKS -->", _history())
    return markdown


def _readme() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    text = re.sub(r"\]\(docs/", "](", text)
    return text.replace("](BENCHMARKS.md)", "](benchmarks.md)")


def _commands() -> str:
    import argparse

    from pipeline.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    said = {choice.dest: choice.help for choice in sub._choices_actions}  # each command's --help line
    out = []
    for name, command in sub.choices.items():
        out.append(f"## `{name}`\n\n{said.get(name) or command.description or ''}\n")
        out.append("| option | what it sets |\n|---|---|")
        for action in command._actions:
            if not action.option_strings or action.help == argparse.SUPPRESS:
                continue
            flags = ", ".join(f"`{f}`" for f in action.option_strings)
            shown = (action.help or "").replace("|", "\\|").replace("\n", " ")
            if "%(default)s" in shown:
                shown = shown.replace("%(default)s", str(action.default))
            out.append(f"| {flags} | {shown} |")
        out.append("")
    return "\n".join(out)


def _history() -> str:
    text = (ROOT / "BENCHMARKS.md").read_text(encoding="utf-8")
    head, *sections = re.split(r"(?m)^(?=## )", text)
    def date(section: str) -> str:
        found = re.search(r"\((\d{4}-\d{2}-\d{2})", section.splitlines()[0])
        return found.group(1) if found else ""
    ordered = sorted(sections, key=date, reverse=True)
    return "## History, newest first\n\n" + "".join(re.sub(r"(?m)^#", "##", s) for s in ordered)
