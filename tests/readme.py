"""The commands printed in README.md and in the documentation pages (docs/**/*.md, and
conf/README.md, which the configuration page includes): every line of their ```bash blocks, and
the `$ `-prompted lines of their plain ``` blocks (the lines after a prompt are the command's
output)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from conftest import ROOT

BLOCK = re.compile(r"^( *)```(\w*)\n(.*?)^\1```", re.S | re.M)
# `VAR=value` words before a program set its environment
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
# the DVC commands run for real, in order, in tests/test_dvc_pipeline.py
DVC_PAGE = "docs/operations/dvc.md"


def doc_pages() -> list[str]:
    """README.md, then every page of the site, then conf/README.md (paths from the root). The
    generated tables under docs/results/ hold no commands and are left out."""
    pages = sorted(
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "docs").rglob("*.md")
        if "results" not in p.relative_to(ROOT / "docs").parts[:-1]
    )
    return ["README.md", *pages, "conf/README.md"]


def _split(line: str) -> list[str] | None:
    """The words of a shell line, comments dropped; None while a quote is still open."""
    try:
        return shlex.split(line, comments=True)
    except ValueError:
        return None


def shell_commands(text: str | None = None) -> list[str]:
    """Commands in order, continuation lines joined, comments dropped, ``a && b`` split, leading
    ``VAR=value`` assignments dropped (a quoted argument may span lines)."""
    text = (ROOT / "README.md").read_text() if text is None else text
    out: list[str] = []
    for match in BLOCK.finditer(text):
        lang, body = match.group(2), match.group(3)
        if lang not in ("bash", "sh", "console", ""):
            continue
        lines = body.splitlines()
        if lang in ("", "console"):  # only prompted lines are commands
            lines = [ln.strip()[2:] for ln in lines if ln.strip().startswith("$ ")]
        buf = ""
        for line in lines:
            stripped = line.strip()
            if stripped.endswith("\\") and not stripped.endswith("\\\\"):
                buf += stripped[:-1] + " "
                continue
            buf += line if buf and _split(buf) is None else stripped
            words = _split(buf)
            if words is None:  # an open quote: the argument goes on on the next line
                buf += "\n"
                continue
            buf = ""
            # split `a && b` into commands (shlex keeps `&&` as a word of its own)
            cmd: list[str] = []
            for w in words + ["&&"]:
                if w == "&&":
                    while cmd and ASSIGNMENT.match(cmd[0]):
                        cmd.pop(0)
                    if cmd:
                        out.append(shlex.join(cmd))
                    cmd = []
                else:
                    cmd.append(w)
    return out


def page_commands(page: str) -> list[str]:
    """The commands printed on one page (a path from the repository root)."""
    return shell_commands((ROOT / page).read_text())


def all_commands() -> list[tuple[str, str]]:
    """(page, command) for every page, in page order, a command repeated on a page once."""
    out: list[tuple[str, str]] = []
    for page in doc_pages():
        seen: set[str] = set()
        for command in page_commands(page):
            if command not in seen:
                seen.add(command)
                out.append((page, command))
    return out


def commands_of(program: str, text: str | None = None) -> list[list[str]]:
    """The argument lists of every README command (or ``text``'s) that runs ``program``."""
    return [shlex.split(c)[1:] for c in shell_commands(text) if shlex.split(c)[0] == program]


def readme_path() -> Path:
    return ROOT / "README.md"
