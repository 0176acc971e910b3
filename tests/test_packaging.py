"""The zoo where FuxiCTR users have it: next to FuxiCTR's own model_zoo, and installed."""

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest
from _standins import fuxictr_style_checkout

REPO = Path(__file__).resolve().parents[1]


def test_a_regular_model_zoo_first_on_sys_path_does_not_hide_the_zoo(in_workspace, tmp_path):
    checkout = fuxictr_style_checkout(tmp_path / "FuxiCTR")
    script = textwrap.dedent("""
        import model_zoo
        from fuxictr_ext import get_model_class, list_models
        from fuxictr_ext.runner import run_experiment
        assert model_zoo.__file__.startswith(sys.argv[1]), model_zoo.__file__
        assert model_zoo.DNN.origin == "fuxictr checkout"
        assert {"RoBlock", "DNN", "DCNv2", "MLCC", "MCMLCC"} <= set(list_models()), list_models()
        assert get_model_class("DNN").__module__ == "fuxictr_zoo_models.DNN.DNN"
        result = run_experiment("config", "RoBlock_demo")
        assert 0.0 <= result["test"]["AUC"] <= 1.0, result
        print("trained", get_model_class("RoBlock").__module__, result["test"]["AUC"])
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(checkout), str(REPO)]))
    proc = subprocess.run([sys.executable, "-c", "import sys\n" + script, str(checkout)], cwd=in_workspace,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "trained fuxictr_zoo_models.RoBlock.RoBlock" in proc.stdout


# ---------------------------------------------------------------- the wheel

SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "fuxictr_ext", "model_zoo", "data_prep", "config")


def _copy_sources(dest: Path) -> Path:
    """The files a wheel is built from, copied out of the repository so that the build
    leaves no build/ or egg-info in it."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "*.csv")
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, dest / name, ignore=ignore)
        else:
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    return dest


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory):
    """A wheel of this checkout installed (not editable) into a fresh virtual environment.

    ``--system-site-packages`` would only show the base interpreter's packages, and torch /
    fuxictr live in the test environment, so the new environment gets a ``.pth`` line
    naming the test environment's site-packages (appended after its own; the ``.pth``
    files there, such as an editable install of this project, are not run). Nothing is
    downloaded: ``--no-deps --no-index``.
    """
    root = tmp_path_factory.mktemp("wheel")
    src = _copy_sources(root / "src")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(root / "dist"), str(src)], check=True, capture_output=True, timeout=300)
    wheel = next((root / "dist").glob("fuxictr_zoo-*.whl"))
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
                   check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "test_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                    "--no-index", str(wheel)], check=True, capture_output=True, timeout=300)
    return venv


def _outside_env() -> dict:
    """The environment of a user's shell: the repository not on PYTHONPATH."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def test_the_wheel_runs_the_demo_from_an_empty_folder(installed_wheel, tmp_path):
    where = subprocess.run([str(installed_wheel / "bin" / "python"), "-c",
                            "import fuxictr_ext, fuxictr_ext.registry as r; print(fuxictr_ext.__file__, r.zoo_dir())"],
                           cwd=tmp_path, env=_outside_env(), capture_output=True, text=True, check=True).stdout
    assert all(path.startswith(str(installed_wheel)) for path in where.split()), where

    proc = subprocess.run([str(installed_wheel / "bin" / "fuxictr-zoo"), "run", "--expid", "DNN_demo",
                           "--override", "synthetic.rows=3000", "--override", "epochs=1"],
                          cwd=tmp_path, env=_outside_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "using the packaged configs in " + str(installed_wheel) in proc.stderr
    assert "[DNN_demo] test logloss:" in proc.stdout and "planted-model ceiling" in proc.stdout
    assert "[exp_id] DNN_demo" in (tmp_path / "config.csv").read_text()
    packaged = next(installed_wheel.glob("lib/python*/site-packages/fuxictr_ext/packaged/config"))
    shipped = sorted(p.relative_to(packaged) for p in packaged.rglob("*.yaml"))
    in_repo = sorted(p.relative_to(REPO / "config")
                     for pattern in ("*.yaml", "model_config/*.yaml", "tuner/*.yaml") for p in (REPO / "config").glob(pattern))
    assert shipped == in_repo
    log = (tmp_path / "checkpoints" / "demo" / "DNN_demo.log").read_text()
    assert "Total number of parameters:" in log and "[DNN_demo] test logloss:" in log


def test_the_wheel_refuses_an_unknown_override_key_without_a_traceback(installed_wheel, tmp_path):
    proc = subprocess.run([str(installed_wheel / "bin" / "fuxictr-zoo"), "run", "--expid", "DNN_demo",
                           "--override", "epoch=1"],
                          cwd=tmp_path, env=_outside_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "override epoch" in proc.stderr and "epochs" in proc.stderr and "Traceback" not in proc.stderr
