"""Build hook: the wheel ships the clone's ``config/`` as ``fuxictr_ext/packaged/config``,
where ``fuxictr-zoo`` finds it when the working directory has no ``./config``
(see fuxictr_ext/cli.py). Everything else is in pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CONFIG = Path(__file__).resolve().parent / "config"


class BuildPyWithConfigs(build_py):
    """build_py, then copy the YAML configs into the built ``fuxictr_ext`` package."""

    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "fuxictr_ext" / "packaged" / "config"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(CONFIG, target, ignore=lambda folder, names: [
            n for n in names if not (n.endswith(".yaml") or (Path(folder) / n).is_dir())])


setup(cmdclass={"build_py": BuildPyWithConfigs})
