"""Every benchmark runs at its tiny size and writes its results files; every results file's
benchmark command still parses.

The benchmarks are the modules of ``benchmarks/`` other than the harness and the fixtures, so a
new benchmark is covered without editing this file. Each runs in its own process (as a user
runs it), with ``--tiny``, its output and work folders under the test's tmp folder.
"""

import importlib
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.harness import Harness

REPO = Path(__file__).resolve().parents[1]
HELPER_MODULES = {"__init__", "harness", "fixtures"}
BENCHMARKS = sorted(path.stem for path in (REPO / "benchmarks").glob("*.py") if path.stem not in HELPER_MODULES)
RESULTS = sorted((REPO / "results").glob("*.md"))
COMMAND = re.compile(r"python -m ([\w.]+)")


@pytest.mark.parametrize("module", BENCHMARKS)
def test_benchmark_runs_tiny_and_writes_its_results(module, tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    argv = ["--tiny", "--out", str(out), "--work-dir", str(work)]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-m", f"benchmarks.{module}", *argv], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"benchmarks.{module} --tiny failed:\n{done.stderr[-4000:]}"
    command = shlex.join(["python", "-m", f"benchmarks.{module}", *argv])
    markdown = (out / f"{module}.md").read_text()
    assert f"Command: `{command}`" in markdown
    twin = json.loads((out / f"{module}.json").read_text())
    assert twin["command"] == command and twin["name"] == module
    assert twin["environment"]["torch_threads"] == 1 and twin["records"] not in (None, [], {})


def commands_in(text: str):
    """``(module, argv)`` of every ``python -m <module> ...`` command in a markdown text: inline
    code ends at its backtick, a code-block line may continue after a trailing backslash, and
    ``#`` starts a comment."""
    lines = text.splitlines()
    for number, line in enumerate(lines):
        for match in COMMAND.finditer(line):
            rest = line[match.start():]
            inline = line[:match.start()].count("`") % 2 == 1
            if inline:
                rest = rest.split("`", 1)[0]
            else:
                following = number + 1
                while rest.rstrip().endswith("\\") and following < len(lines):
                    rest = rest.rstrip()[:-1] + " " + lines[following].strip()
                    following += 1
            words = shlex.split(rest, comments=True)
            yield match.group(1), words[3:]


class _Parsed(Exception):
    """Raised by the patched Harness.parse once the options parsed."""


def test_command_extraction():
    text = ("Command: `python -m benchmarks.x --a 1 --b 'c d'` and\n"
            "```\npython -m benchmarks.y --rows 4 \\\n    --repeats 2   # an earlier run\n```\n")
    assert list(commands_in(text)) == [("benchmarks.x", ["--a", "1", "--b", "c d"]),
                                       ("benchmarks.y", ["--rows", "4", "--repeats", "2"])]


@pytest.mark.parametrize("path", RESULTS, ids=[path.name for path in RESULTS])
def test_results_file_names_a_command_that_parses(path, monkeypatch):
    commands = list(commands_in(path.read_text()))
    other_commands = re.findall(r"python (?:run_expid\.py|-c )", path.read_text())
    assert commands or other_commands, f"{path.name} names no command"

    def parse_only(self, argv=None):
        self.parser.parse_args(argv)  # exits with status 2 on an unknown flag or a bad value
        raise _Parsed

    monkeypatch.setattr(Harness, "parse", parse_only)
    for module, argv in commands:
        assert importlib.util.find_spec(module) is not None, f"{path.name}: no module {module}"
        if module.startswith("benchmarks."):
            with pytest.raises(_Parsed):
                importlib.import_module(module).main(argv)
