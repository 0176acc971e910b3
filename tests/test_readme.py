"""Every Python and shell snippet of README.md runs as written, on the demo data.

The snippets run in README order in one clone-like folder: a copy of the tiny test
workspace's config (the demo ids keep their schema with a few thousand rows), FuxiCTR's
tuner grid file and ``run_expid.py``, with the repository on PYTHONPATH. Each Python
block is a script of its own; each shell command runs in bash. ``fuxictr-zoo`` is run as
``python -m fuxictr_ext.cli`` (the same ``main`` that the installed console script
calls; tests/test_packaging.py runs the installed script itself).

Skipped, each for the reason in SHELL_SKIPS / PYTHON_SKIPS: commands that install from
the package registry or need a real download, GPUs or several machines, placeholders,
and the test suite itself.
"""

import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import List, NamedTuple

import pytest
from _standins import fuxictr_style_checkout

REPO = Path(__file__).resolve().parents[1]

SHELL_SKIPS = [
    (r"^python3 -m venv|^pip install", "installs from the package registry (network); "
                                       "tests/test_packaging.py installs a wheel of this checkout offline"),
    (r"^python -m pytest", "the test suite itself"),
    (r"/path/to/", "needs a downloaded BARS release (tests/test_prepare_sources.py prepares stand-in files)"),
    (r"--gpu 0|--expid DNN_criteo|--expid \w+_criteo\b", "needs a downloaded Criteo release (and a GPU)"),
    (r"--nnodes|HOST:", "needs several machines"),
    (r"--expid \.\.\.", "a placeholder, not a command"),
    (r"(fuxictr_ext\.serving\.server|fuxictr-zoo serve)\b.*&(\s|$)|^curl ", "a server left running and requests to it: "
                                                 "tests/test_serving_server.py "
                                                 "starts the server on 127.0.0.1 and sends these requests"),
]

# Python blocks that are not self-contained, keyed by the sha1 of their exact text, so
# that an entry stops matching (and the block runs) as soon as the block is edited.
PYTHON_SKIPS: dict = {}

FUXICTR_CHECKOUT_MARK = "# PYTHONPATH=/path/to/FuxiCTR"


class Snippet(NamedTuple):
    section: str
    language: str
    text: str

    @property
    def key(self) -> str:
        return hashlib.sha1(self.text.encode()).hexdigest()


def readme_snippets() -> List[Snippet]:
    """The README's ```python and ```bash blocks, with the ## section each is in."""
    snippets, section = [], ""
    lines = (REPO / "README.md").read_text().splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("## "):
            section = line[3:].strip()
        fence = re.match(r"^```(\w+)\s*$", line)
        if fence:
            body = []
            index += 1
            while not lines[index].startswith("```"):
                body.append(lines[index])
                index += 1
            if fence.group(1) in ("python", "bash", "sh", "shell"):
                snippets.append(Snippet(section, "python" if fence.group(1) == "python" else "bash",
                                        "\n".join(body) + "\n"))
        index += 1
    return snippets


def _complete(command: str) -> bool:
    """False while a quote is open (comments, apostrophes in them included, are shell's)."""
    try:
        shlex.split(command, comments=True)
    except ValueError:
        return False
    return True


def shell_commands(text: str) -> List[str]:
    """One entry per command: continuation lines and lines inside an open single quote
    joined, blank and comment lines dropped."""
    commands, pending = [], ""
    for line in text.splitlines():
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1].strip() + " "
            continue
        command = (pending + line.strip()).strip()
        if not _complete(command):                  # a quoted argument goes on
            pending = command + "\n"
            continue
        pending = ""
        if command and not command.startswith("#"):
            commands.append(command)
    return commands


def skip_reason(command: str):
    return next((reason for pattern, reason in SHELL_SKIPS if re.search(pattern, command)), None)


def test_the_readme_has_runnable_snippets_of_both_kinds():
    snippets = readme_snippets()
    assert any(s.language == "python" for s in snippets) and any(s.language == "bash" for s in snippets)
    commands = [c for s in snippets if s.language == "bash" for c in shell_commands(s.text)]
    assert any(skip_reason(c) is None for c in commands)
    assert shell_commands("a \\\n  b  # note\n# only a comment\n\nc\n") == ["a b  # note", "c"]
    assert shell_commands("d -x '{\n  \"k\": 1}'\ne\n") == ["d -x '{\n\"k\": 1}'", "e"]


@pytest.fixture(scope="module")
def clone_like(zoo_workspace, tmp_path_factory):
    """A folder that looks like a clone to the snippets: config/ (tiny demo data, with
    the tuner grid file and the papers' numbers), run_expid.py; the repository's packages
    on PYTHONPATH."""
    root = tmp_path_factory.mktemp("readme")
    shutil.copytree(zoo_workspace / "config", root / "config")
    shutil.copytree(REPO / "config" / "paper_results", root / "config" / "paper_results", dirs_exist_ok=True)
    (root / "config" / "tuner").mkdir()
    shutil.copy2(REPO / "config" / "tuner" / "DNN_demo_dropout.yaml", root / "config" / "tuner")
    shutil.copy2(REPO / "run_expid.py", root / "run_expid.py")
    return root


def _env(*first_on_path: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, first_on_path), str(REPO)])
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


def test_every_readme_snippet_runs(clone_like, tmp_path):
    ran, skipped = [], []
    for number, snippet in enumerate(readme_snippets()):
        where = f"README section {snippet.section!r}, {snippet.language} block {number}"
        if snippet.language == "python":
            if snippet.key in PYTHON_SKIPS:
                skipped.append((where, PYTHON_SKIPS[snippet.key]))
                continue
            first = [fuxictr_style_checkout(tmp_path / f"FuxiCTR{number}")] \
                if snippet.text.startswith(FUXICTR_CHECKOUT_MARK) else []
            script = tmp_path / f"snippet_{number}.py"
            script.write_text(snippet.text)
            started = time.perf_counter()
            proc = subprocess.run([sys.executable, str(script)], cwd=clone_like, env=_env(*first),
                                  capture_output=True, text=True, timeout=600)
            assert proc.returncode == 0, f"{where} failed:\n{snippet.text}\n{proc.stderr[-3000:]}"
            ran.append(f"{where} ({time.perf_counter() - started:.0f} s)")
            continue
        for command in shell_commands(snippet.text):
            reason = skip_reason(command)
            if reason:
                skipped.append((f"{where}: {command}", reason))
                continue
            runnable = re.sub(r"^fuxictr-zoo\b", f"{sys.executable} -m fuxictr_ext.cli", command)
            started = time.perf_counter()
            proc = subprocess.run(["bash", "-c", runnable], cwd=clone_like, env=_env(),
                                  capture_output=True, text=True, timeout=600)
            assert proc.returncode == 0, f"{where}: `{command}` failed:\n{proc.stderr[-3000:]}"
            ran.append(f"{where}: {command} ({time.perf_counter() - started:.0f} s)")
    print("ran:", *ran, "skipped:", *(f"{w} - {r}" for w, r in skipped), sep="\n  ")
    assert ran
