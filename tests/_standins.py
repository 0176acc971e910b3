"""Stand-ins for what FuxiCTR users have on their machines (shared by several test files)."""

from pathlib import Path


def fuxictr_style_checkout(root: Path) -> Path:
    """A folder laid out like FuxiCTR's source checkout: a regular ``model_zoo`` package
    (an ``__init__.py`` importing its models) with folders whose names clash with ours.
    Returns the folder to put first on sys.path."""
    zoo = root / "model_zoo"
    for name in ("DNN", "DCNv2"):
        (zoo / name / "src").mkdir(parents=True)
        (zoo / name / "src" / "__init__.py").write_text(
            f"class {name}:\n    origin = 'fuxictr checkout'\n")
    (zoo / "__init__.py").write_text("from .DNN.src import DNN\nfrom .DCNv2.src import DCNv2\n")
    return root
