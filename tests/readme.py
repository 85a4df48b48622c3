"""The commands printed in README.md: every line of its ```bash blocks, and the `$ `-prompted
lines of its plain ``` blocks (the lines after a prompt are the command's output)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from conftest import ROOT

BLOCK = re.compile(r"^( *)```(\w*)\n(.*?)^\1```", re.S | re.M)


def shell_commands(text: str | None = None) -> list[str]:
    """Commands in order, continuation lines joined, comments dropped, ``a && b`` split."""
    text = (ROOT / "README.md").read_text() if text is None else text
    out: list[str] = []
    for match in BLOCK.finditer(text):
        lang, body = match.group(2), match.group(3)
        if lang not in ("bash", "sh", "console", ""):
            continue
        lines = body.splitlines()
        if lang in ("", "console"):  # only prompted lines are commands
            lines = [ln.strip()[2:] for ln in lines if ln.strip().startswith("$ ")]
        joined, buf = [], ""
        for line in lines:
            line = line.strip()
            if line.endswith("\\"):
                buf += line[:-1] + " "
                continue
            joined.append(buf + line)
            buf = ""
        for line in joined:
            words = shlex.split(line, comments=True)
            if not words:
                continue
            # split `a && b` into commands (shlex keeps `&&` as a word of its own)
            cmd: list[str] = []
            for w in words + ["&&"]:
                if w == "&&":
                    if cmd:
                        out.append(shlex.join(cmd))
                    cmd = []
                else:
                    cmd.append(w)
    return out


def commands_of(program: str, text: str | None = None) -> list[list[str]]:
    """The argument lists of every README command that runs ``program``."""
    return [shlex.split(c)[1:] for c in shell_commands(text) if shlex.split(c)[0] == program]


def readme_path() -> Path:
    return ROOT / "README.md"
