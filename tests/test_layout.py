"""The package's import arrows: training never needs serving or the paper-table
reproduction, configs are read without the runner, and one base class covers the
zoo's user errors (so one handler reports them all)."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _loaded_after(imports: str) -> set:
    """The fuxictr_ext / model_zoo modules a fresh interpreter holds after ``imports``."""
    code = (f"import sys\n{imports}\n"
            "print('\\n'.join(m for m in sys.modules if m.startswith(('fuxictr_ext', 'model_zoo'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_training_a_two_stream_model_needs_no_serving_module():
    loaded = _loaded_after("import fuxictr_ext.runner, fuxictr_ext.backbones.two_stream, fuxictr_ext.layers.rank_aware")
    assert not {m for m in loaded if m.startswith("fuxictr_ext.serving")}
    assert "fuxictr_ext.results.reproduce" not in loaded


@pytest.mark.parametrize("module", ["fuxictr_ext.serving.load", "fuxictr_ext.config"])
def test_configs_are_read_without_the_runner(module):
    assert "fuxictr_ext.runner" not in _loaded_after(f"import {module}")


def test_the_zoo_user_errors_share_one_base_class():
    from fuxictr_ext.base import TrainingDiverged
    from fuxictr_ext.config import ConfigError, ZooError
    from fuxictr_ext.data import DataError
    from fuxictr_ext.distributed import DistributedSetupError
    from fuxictr_ext.serving import RankAwareUnsupportedError, RequestError

    for error in (ConfigError, DataError, TrainingDiverged, DistributedSetupError, RequestError,
                  RankAwareUnsupportedError):
        assert issubclass(error, ZooError), error
