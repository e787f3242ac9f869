"""Interactive explorers of the book: one factory per explorer, one submodule per chapter.

Every factory returns an ``ipywidgets.VBox`` built by `explorer` with three inspectable
attributes, so tests (and curious readers) can drive it without a browser:

- ``.controls``: dict name -> control widget (set ``.value`` to move it);
- ``.output``: the ``ipywidgets.Output`` the figure is drawn into;
- ``.state``: dict of what the last redraw computed (plus ``renders``, a redraw counter) and
  ``.figure``, the last matplotlib figure.
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
