"""Every benchmark runs at its tiny size and writes its results files; every results file's
benchmark command still parses.

The benchmarks are the modules of ``benchmarks/`` other than the harness and the fixtures, so a
new benchmark is covered without editing this file. Each runs in its own process (as a user
runs it), with ``--tiny``, its output and work folders under the test's tmp folder; the selected
benchmarks run two at a time (each with one torch thread), started together on first use.
"""

import concurrent.futures
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
HELPER_MODULES = {"__init__", "harness", "fixtures", "releases"}
RELEASE_CHECK_MARK = re.compile(r"^RELEASE_CHECK = True\b", re.M)
# Release-equivalence checks compare with an authors' checkout given by --release-dir, which CI
# does not have: they are not run here, only checked to refuse to start without one.
RELEASE_CHECKS = sorted(path.stem for path in (REPO / "benchmarks").glob("*.py")
                        if RELEASE_CHECK_MARK.search(path.read_text()))
BENCHMARKS = sorted(path.stem for path in (REPO / "benchmarks").glob("*.py")
                    if path.stem not in HELPER_MODULES and path.stem not in RELEASE_CHECKS)
RESULTS = sorted((REPO / "results").glob("*.md"))
COMMAND = re.compile(r"python -m ([\w.]+)")


def _run_tiny(module: str, root: Path) -> tuple:
    out, work = root / module / "out", root / module / "work"
    argv = ["--tiny", "--out", str(out), "--work-dir", str(work)]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-m", f"benchmarks.{module}", *argv], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    return done, out, argv


@pytest.fixture(scope="module")
def tiny_runs(request, tmp_path_factory):
    """module -> future of (finished process, out folder, argv), for the benchmarks this session runs."""
    selected = [item.callspec.params["module"] for item in request.session.items
                if getattr(item, "originalname", None) == "test_benchmark_runs_tiny_and_writes_its_results"]
    root = tmp_path_factory.mktemp("benchmarks")
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)
    yield {module: pool.submit(_run_tiny, module, root) for module in selected}
    pool.shutdown(wait=True, cancel_futures=True)  # after a failure (-x), the benchmarks not started are not run


@pytest.mark.parametrize("module", RELEASE_CHECKS)
def test_release_check_needs_a_release_dir(module):
    parser_error = subprocess.run([sys.executable, "-m", f"benchmarks.{module}"], cwd=REPO,
                                  env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True,
                                  timeout=300)
    assert parser_error.returncode == 2 and "--release-dir" in parser_error.stderr


@pytest.mark.parametrize("module", BENCHMARKS)
def test_benchmark_runs_tiny_and_writes_its_results(module, tiny_runs):
    done, out, argv = tiny_runs[module].result()
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
