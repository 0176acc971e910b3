"""Build hook: the wheel ships the clone's configs (``config/dataset_config.yaml``,
``config/model_config/*.yaml``, ``config/tuner/*.yaml``; not the folders FuxiCTR's tuner
generates under ``config/tuner/``) as ``fuxictr_ext/packaged/config``, where
``fuxictr-zoo`` finds them when the working directory has no ``./config``
(see fuxictr_ext/cli.py). Everything else is in pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CONFIG = Path(__file__).resolve().parent / "config"
SHIPPED = ("*.yaml", "model_config/*.yaml", "tuner/*.yaml")


class BuildPyWithConfigs(build_py):
    """build_py, then copy the YAML configs into the built ``fuxictr_ext`` package."""

    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "fuxictr_ext" / "packaged" / "config"
        if target.exists():
            shutil.rmtree(target)
        for pattern in SHIPPED:
            for source in sorted(CONFIG.glob(pattern)):
                destination = target / source.relative_to(CONFIG)
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, destination)


setup(cmdclass={"build_py": BuildPyWithConfigs})
