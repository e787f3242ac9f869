"""Figures of the book: one submodule per chapter, all re-exported here.

Each submodule lists its public functions in ``__all__``; ``deepscope.plotting.<name>`` reaches
every one of them.
"""

from . import collapse as _collapse
from . import contrastive as _contrastive
from . import core as _core
from . import landscape as _landscape
from . import saliency as _saliency
from . import scaling as _scaling
from .collapse import *  # noqa: F403
from .contrastive import *  # noqa: F403
from .core import *  # noqa: F403
from .landscape import *  # noqa: F403
from .saliency import *  # noqa: F403
from .scaling import *  # noqa: F403

__all__ = sorted({name for m in (_core, _saliency, _landscape, _contrastive, _collapse, _scaling)
                  for name in m.__all__})
