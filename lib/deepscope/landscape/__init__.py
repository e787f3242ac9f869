"""Loss landscapes (chapter 2): slices, curvature, sharpness, stability and connectivity.

Everything here takes a model, a loss function ``loss_fn(outputs, targets)`` (the mean loss of
a batch) and ``data`` (a pair ``(x, y)`` or an iterable of ``(x, y)`` batches), and never
changes the model: points of parameter space are dicts ``{name: tensor}`` over the trainable
parameters, evaluated with ``torch.func.functional_call`` in eval mode. Only the training
functions (`fit_sam`, `track_sharpness`) update a model, in place, as `deepscope.train.fit`
does.

Modules: `directions` (random and filter-normalised directions), `slices` (1-D and 2-D slices,
interpolation), `linalg` (power iteration, Lanczos), `curvature` (Hessian-vector products, top
eigenvalues), `spectrum` (trace and spectral density), `sharpness` (SAM, edge of stability),
`connectivity` (Bezier curves, barriers), `trajectory` (PCA of a training run and its random-walk
null), `geometry` (numbers read off slices: curvature, non-convexity).
"""

from ._core import as_point, as_vector, snapshot, trainable_parameters
from .connectivity import BezierCurve, curve_losses, fit_bezier, loss_barrier
from .curvature import (
    HessianOperator,
    hessian_matrix,
    hessian_operator,
    hvp,
    loss_gradient,
    top_eigenvalues,
)
from .directions import filter_normalize, orthogonalize, random_direction
from .geometry import Nonconvexity, slice_curvature, slice_nonconvexity
from .linalg import lanczos, power_iteration, ritz_pairs
from .sharpness import SAM, SharpnessHistory, fit_sam, track_sharpness
from .slices import interpolate, slice_1d, slice_2d
from .spectrum import SpectralDensity, hessian_trace, spectral_density
from .trajectory import TrajectoryPCA, random_walk_like, trajectory_pca

__all__ = [
    # points and directions
    "trainable_parameters", "snapshot", "as_vector", "as_point",
    "random_direction", "filter_normalize", "orthogonalize",
    # slices
    "interpolate", "slice_1d", "slice_2d", "slice_curvature", "slice_nonconvexity", "Nonconvexity",
    # curvature
    "HessianOperator", "hessian_operator", "loss_gradient", "hvp", "hessian_matrix",
    "top_eigenvalues", "hessian_trace", "SpectralDensity", "spectral_density",
    "power_iteration", "lanczos", "ritz_pairs",
    # sharpness and stability
    "SAM", "fit_sam", "SharpnessHistory", "track_sharpness",
    # connectivity and trajectories
    "BezierCurve", "fit_bezier", "curve_losses", "loss_barrier",
    "TrajectoryPCA", "trajectory_pca", "random_walk_like",
]
