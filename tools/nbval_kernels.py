"""A pytest plugin for the notebook stage: nbval's kernels start race-free and time out clearly.

    pytest -p tools.nbval_kernels --nbval-lax chapters -n 2

nbval starts one kernel per notebook with jupyter_client's TCP defaults; two xdist workers
starting kernels at the same moment can be handed the same ports and wait forever (see
`tools.kernels`). This plugin swaps nbval's kernel manager for `PrivateBlockingKernelManager`
(IPC sockets in a private folder per kernel). Every kernel a worker started is killed when the
worker exits, also after a Ctrl-C.
"""

from __future__ import annotations

import atexit


def pytest_configure(config):
    try:
        import nbval.kernel
    except ImportError:  # nbval not installed: nothing to patch
        return
    from tools.kernels import PrivateBlockingKernelManager, kill_kernels

    nbval.kernel.KernelManager = PrivateBlockingKernelManager
    atexit.register(kill_kernels)


def pytest_unconfigure(config):
    from tools.kernels import kill_kernels

    kill_kernels()
