"""Neural collapse (chapter 4): the simplex ETF, the NC1-NC4 measurements, feature tracking
during training, the unconstrained-features model and a classifier head fixed to an ETF.

Papyan, Han & Donoho (2020) observed that in the terminal phase of training (past zero training
error) the last-layer features of each class collapse to their mean (NC1), the centred class
means form a simplex equiangular tight frame (NC2), the classifier aligns with them (NC3), and
the network decides like a nearest-class-centre rule (NC4)::

    from deepscope import collapse
    tracker = collapse.CollapseTracker(x, y, every=50)
    collapse.fit_terminal_phase(model, (x, y), steps=1000, callback=tracker)
    tracker.history.series("nc1")

    m = collapse.collapse_metrics(features, labels, model.fc.weight, model.fc.bias)
    ufm = collapse.train_ufm(num_classes=4, dim=8, n_per_class=50)
"""

from .controls import (
    PlaneRegularity,
    nearest_centre_accuracy,
    plane_regularity,
    worst_equiangularity,
)
from .etf import FixedETFHead, etf_plane, fixed_etf_head, simplex_etf
from .metrics import (
    CollapseMetrics,
    class_means,
    collapse_metrics,
    covariances,
    equiangularity,
    equinorm,
    etf_distance,
    nc1,
    ncc_mismatch,
    self_duality,
)
from .recipe import fit_terminal_phase
from .tracking import (
    CollapseHistory,
    CollapseTracker,
    Snapshot,
    extract_features,
    find_classifier,
    layer_features,
    nc1_by_layer,
    record_features,
)
from .ufm import UFMResult, train_ufm, ufm_loss

__all__ = [
    "simplex_etf",
    "FixedETFHead",
    "fixed_etf_head",
    "etf_plane",
    "class_means",
    "covariances",
    "nc1",
    "equinorm",
    "equiangularity",
    "etf_distance",
    "self_duality",
    "ncc_mismatch",
    "worst_equiangularity",
    "PlaneRegularity",
    "plane_regularity",
    "nearest_centre_accuracy",
    "CollapseMetrics",
    "collapse_metrics",
    "find_classifier",
    "record_features",
    "extract_features",
    "layer_features",
    "nc1_by_layer",
    "Snapshot",
    "CollapseHistory",
    "CollapseTracker",
    "fit_terminal_phase",
    "ufm_loss",
    "UFMResult",
    "train_ufm",
]
