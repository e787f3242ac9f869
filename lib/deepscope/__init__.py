"""deepscope: the library of an open, notebook-first textbook on the science of deep learning.

The top level holds what every notebook calls first (`setup_notebook`, `get_device`,
`seed_everything`). The topic modules are imported on first use, so ``import deepscope`` stays
fast and does not pull in matplotlib or ipywidgets until a notebook asks for them::

    import deepscope
    ctx = deepscope.setup_notebook(seed=0)
    model = deepscope.models.mlp(64, hidden=(128,), out_features=10)
"""

from __future__ import annotations

import importlib

from ._warnings import CacheWarning, ConvergenceWarning, IdentifiabilityWarning
from .device import get_device, seed_everything, setup_notebook

__version__ = "0.1.0"

_SUBMODULES = (
    "cli",
    "collapse",
    "contrastive",
    "data",
    "device",
    "grading",
    "landscape",
    "models",
    "plotting",
    "saliency",
    "scaling",
    "train",
    "widgets",
)

__all__ = ["__version__", "CacheWarning", "ConvergenceWarning", "IdentifiabilityWarning",
           "get_device", "seed_everything", "setup_notebook", *_SUBMODULES]


def __getattr__(name: str):
    """Import a topic module on first attribute access (PEP 562)."""
    if name in _SUBMODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'deepscope' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_SUBMODULES))
