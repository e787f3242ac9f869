"""Saliency (chapter 1): which input features does a prediction depend on, and can we trust the
maps?

Attribution methods (every one returns a tensor of the shape of ``x``; Grad-CAM one map per
image), each computed in eval mode with the model's mode, weights and hooks left as they were:

- `gradient`, `input_x_gradient`, `smoothgrad` (+ `smoothgrad_sq`, `vargrad`),
  `local_linear_fit` (C-LIME, which SmoothGrad equals in expectation);
- `integrated_gradients` (Captum's five quadrature rules, `quadrature`), `expected_gradients`,
  `deeplift` (rescale rule), `occlusion`;
- `guided_backprop`, `deconvolution` (modified backward rules through the ReLUs);
- `grad_cam`, `grad_cam_plus_plus` (at any layer, by module or name).

Checking maps: `model_randomization` / `cascading_randomization` with `rank_correlation` and the
`edge_detector` control (sanity checks); `pointing_game`, `mask_energy`, `mask_iou` against known
ground truth, `blank_maps` to count the maps none of these can score; `road` (noisy linear
imputation), `roar` and `diffroar` (remove and retrain).
Robust models for comparison: `pgd_attack`, `adversarial_fit`, `robust_accuracy`.

Conventions follow Captum wherever Captum defines them (quadrature weights, the sign of the
completeness gap, SmoothGrad's absolute sigma, occlusion's averaging); each docstring says so.
"""

from .cam import find_layer, grad_cam, grad_cam_plus_plus, layer_gradients
from .deeplift import DEEPLIFT_ELEMENTWISE, deeplift
from .gradients import (
                        SMOOTHGRAD_KINDS,
                        gradient,
                        input_x_gradient,
                        local_linear_fit,
                        smoothgrad,
                        smoothgrad_sq,
                        vargrad,
)
from .guided import MODIFIED_RULES, deconvolution, guided_backprop
from .integrated import (
                        QUADRATURE_RULES,
                        completeness_gap,
                        expected_gradients,
                        gaussian_blur,
                        integrated_gradients,
                        quadrature,
)
from .localization import (
                        HEATMAP_REDUCTIONS,
                        blank_maps,
                        heatmap,
                        mask_energy,
                        mask_iou,
                        pointing_game,
)
from .occlusion import occlusion, occlusion_windows
from .removal import (
                        NEIGHBOUR_WEIGHTS,
                        diffroar,
                        keep_features,
                        noisy_linear_impute,
                        rank_features,
                        remove_features,
                        road,
                        roar,
)
from .robust import NORMS, adversarial_fit, pgd_attack, robust_accuracy
from .sanity import (
                        RandomizationResult,
                        cascading_randomization,
                        edge_detector,
                        model_randomization,
                        randomizable_layers,
                        rank_correlation,
)

#: Attribution methods by name, each ``method(model, x, target) -> tensor of x's shape``.
METHODS = {
    "gradient": gradient,
    "input_x_gradient": input_x_gradient,
    "smoothgrad": smoothgrad,
    "integrated_gradients": integrated_gradients,
    "deeplift": deeplift,
    "guided_backprop": guided_backprop,
    "deconvolution": deconvolution,
}

__all__ = [
    "DEEPLIFT_ELEMENTWISE", "HEATMAP_REDUCTIONS", "METHODS", "MODIFIED_RULES",
    "NEIGHBOUR_WEIGHTS", "NORMS",
    "QUADRATURE_RULES", "SMOOTHGRAD_KINDS", "RandomizationResult", "adversarial_fit",
    "blank_maps",
    "cascading_randomization", "completeness_gap", "deconvolution", "deeplift", "diffroar",
    "edge_detector", "guided_backprop",
    "expected_gradients", "find_layer", "gaussian_blur", "grad_cam", "grad_cam_plus_plus",
    "gradient", "heatmap", "input_x_gradient", "integrated_gradients", "keep_features",
    "layer_gradients", "local_linear_fit", "mask_energy", "mask_iou", "model_randomization",
    "noisy_linear_impute", "occlusion", "occlusion_windows", "pgd_attack", "pointing_game",
    "quadrature", "randomizable_layers", "rank_correlation", "rank_features", "remove_features",
    "road", "roar", "robust_accuracy", "smoothgrad", "smoothgrad_sq", "vargrad",
]
