"""Where the shipped data lives: the trained weights (with ``MANIFEST.json``) and the bundled sample.

An installed wheel carries them inside the package (``vs_hdrvid/_data/weights``,
``vs_hdrvid/_data/sample``), found through :mod:`importlib.resources`; a source checkout (an
editable install, or running from the tree) keeps them at the top of the checkout (``weights/``,
``examples/sample/``), which the wheel is built from.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["data_dir"]

_CHECKOUT = {"weights": Path("weights"), "sample": Path("examples") / "sample"}


def data_dir(name: str) -> Path:
    """The folder of the shipped ``"weights"`` or ``"sample"``.

    Raises:
        KeyError: another name.
    """
    rel = _CHECKOUT[name]
    packaged = resources.files("vs_hdrvid").joinpath("_data", name)
    if isinstance(packaged, Path) and packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[1] / rel
