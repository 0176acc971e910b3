"""The zoo where FuxiCTR users have it: next to FuxiCTR's own model_zoo, and installed."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _fuxictr_style_model_zoo(root: Path) -> Path:
    """A regular ``model_zoo`` package laid out like FuxiCTR's source checkout:
    an ``__init__.py`` importing its models, and folders whose names clash with ours."""
    zoo = root / "model_zoo"
    for name in ("DNN", "DCNv2"):
        (zoo / name / "src").mkdir(parents=True)
        (zoo / name / "src" / "__init__.py").write_text(
            f"class {name}:\n    origin = 'fuxictr checkout'\n")
    (zoo / "__init__.py").write_text("from .DNN.src import DNN\nfrom .DCNv2.src import DCNv2\n")
    return root


def test_a_regular_model_zoo_first_on_sys_path_does_not_hide_the_zoo(in_workspace, tmp_path):
    checkout = _fuxictr_style_model_zoo(tmp_path / "FuxiCTR")
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
