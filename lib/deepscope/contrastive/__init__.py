"""Contrastive geometry: how contrastive objectives arrange representations on the sphere.

- `losses`: `info_nce` (SimCLR's NT-Xent), `supcon`, `negative_weights`, `anchor_gradients`.
- `geometry`: `alignment`, `uniformity` (Wang & Isola 2020), `effective_rank` (Roy & Vetterli
  2007), `singular_spectrum` (Jing et al. 2022), `collapse_indicator` (Chen & He 2021).
- `augment`: random views of digits (`augment_digits`, `two_views`).
- `trainers`: `projection_net`, `predictor_net`, `train_simclr`, `train_simsiam`.
- `probe`: `embed`, `linear_probe`, `knn_accuracy`; `fewlabel`: `few_label_probe`.
- `bounds`: `infonce_bound` (I >= log N - L; van den Oord et al. 2018), `infonce_limit`
  (Wang & Isola 2020, Theorem 1).

Every name below is importable from ``deepscope.contrastive``::

    from deepscope import contrastive
    loss = contrastive.info_nce(z1, z2, temperature=0.5)
"""

from .augment import affine_digits, augment_digits, two_views
from .bounds import InfoNCEBound, InfoNCELimit, infonce_bound, infonce_limit
from .fewlabel import FewLabelResult, few_label_probe
from .geometry import (
    alignment,
    circle_points,
    circle_toy,
    collapse_indicator,
    effective_rank,
    singular_spectrum,
    uniform_sphere_uniformity,
    uniformity,
)
from .losses import (
    AnchorGradients,
    anchor_gradients,
    collapsed_info_nce,
    info_nce,
    negative_weights,
    supcon,
    weight_entropy,
)
from .probe import ProbeResult, embed, knn_accuracy, linear_probe
from .trainers import (
    ContrastiveHistory,
    predictor_net,
    projection_net,
    simsiam_loss,
    train_simclr,
    train_simsiam,
)

__all__ = [
    "AnchorGradients",
    "ContrastiveHistory",
    "FewLabelResult",
    "InfoNCEBound",
    "InfoNCELimit",
    "ProbeResult",
    "affine_digits",
    "alignment",
    "anchor_gradients",
    "augment_digits",
    "circle_points",
    "circle_toy",
    "collapse_indicator",
    "collapsed_info_nce",
    "effective_rank",
    "embed",
    "few_label_probe",
    "info_nce",
    "infonce_bound",
    "infonce_limit",
    "knn_accuracy",
    "linear_probe",
    "negative_weights",
    "predictor_net",
    "projection_net",
    "simsiam_loss",
    "singular_spectrum",
    "supcon",
    "train_simclr",
    "train_simsiam",
    "two_views",
    "uniform_sphere_uniformity",
    "uniformity",
    "weight_entropy",
]
