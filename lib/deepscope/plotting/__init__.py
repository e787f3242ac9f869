"""Figures of the book: one submodule per chapter, all re-exported here.

Each submodule lists its public functions in ``__all__``; ``deepscope.plotting.<name>`` reaches
every one of them.
"""

from .collapse import *  # noqa: F403
from .contrastive import *  # noqa: F403
from .core import *  # noqa: F403
from .landscape import *  # noqa: F403
from .saliency import *  # noqa: F403
from .scaling import *  # noqa: F403
