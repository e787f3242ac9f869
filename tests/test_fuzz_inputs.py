"""Every public function, fed the 9 kinds of bad input a researcher feeds it, must say so by name.

Discovery: every function in ``__all__`` of the topic modules (`TOPICS`). Each needs a *recipe*,
a valid call on small data (`RECIPES`, or inferred from its parameter names by `infer_recipe`),
naming its primary input (what the bad inputs replace), the argument that must agree with it in
length (``partner``) and its class labels (``target``), as paths into the call's arguments.

The 9 kinds (`KINDS`), applied to the primary input unless said otherwise:

- ``nan`` / ``inf``: one entry NaN / +inf (a number argument becomes NaN / inf);
- ``device``: the input on another device (a ``meta`` tensor stands in for a GPU on a CPU
  machine; for numpy functions any torch tensor off the CPU), when another argument (the model,
  a second tensor) fixes the device;
- ``dtype``: float16 where the model or another input is float32 (mixed dtypes), an integer
  tensor where floats are needed, a float where an int is, text where numbers are;
- ``ndim``: one dimension missing (one image without its batch dimension), or a vector given
  as a matrix;
- ``empty``: zero rows;
- ``batch``: the partner one row short (e.g. 6 images, 5 labels);
- ``target``: a class label out of range;
- ``type``: not a tensor (a list, a string, a string for a model).

A kind that does not apply to a function is "n/a" (e.g. ``target`` without labels). Every other
case must raise a *named* error: a ``ValueError`` or ``TypeError`` whose message reads
``"<function>: ... `<argument>` ..."``, or be listed in `ACCEPTED` with the reason the input is
in fact valid. No function may return a finite answer computed from a NaN or inf input.

Run as a script to print the counts per kind and per outcome (the numbers of issue 13):
``python tests/test_fuzz_inputs.py [-v]``.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import math
import re
import signal
import sys
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

TOPICS = ("saliency", "landscape", "contrastive", "collapse", "scaling", "train")
KINDS = ("nan", "inf", "device", "dtype", "ndim", "empty", "batch", "target", "type")
NAMED = re.compile(r"^[A-Za-z_][\w.]*: .*`[^`]+`", re.S)  # "<function>: ... `<argument>` ..."
NUM_CLASSES = 3
CASE_SECONDS = 60  # a case that runs longer is a hang: reported as a raw failure

_SWEEP = ("raw on purpose: a config is whatever `run` takes; run_sweep runs every config and "
          "raises one SweepError holding each run's own (named) error, so that one bad config "
          "does not lose the others (documented)")

#: Cases whose "bad" input is in fact valid, (function, kind) -> why. Each is still run: it must
#: not fail with a raw error (unless its reason starts "raw on purpose"), and a NaN/inf case
#: must not return a finite answer.
ACCEPTED: dict[tuple[str, str], str] = {
    # shapes: the "wrong" rank is a valid layout of the same function
    ("heatmap", "ndim"): "(C, H, W) is read as (B, H, W) maps, Grad-CAM's layout",
    ("rank_features", "ndim"): "scores (B, ...) of any rank: (1, 8, 8) is one 8x8 map",
    ("embed", "ndim"): "inputs (N, ...) of any rank the encoder takes: (1, 8, 8) is one sample",
    ("negative_weights", "ndim"): "similarities (..., K): any leading shape",
    ("weight_entropy", "ndim"): "weights (..., K): any leading shape",
    ("as_vector", "ndim"): "flattens tensors of any shape",
    ("as_vector", "empty"): "flattens tensors of any size (a parameter may be empty)",
    ("chinchilla_loss", "ndim"): "N and D broadcast like numpy arrays (a grid is 2-D)",
    ("loss_vs_params", "ndim"): "N of any shape, evaluated elementwise",
    ("loss_vs_data", "ndim"): "D of any shape, evaluated elementwise",
    ("isoflop_loss", "ndim"): "N and C broadcast like numpy arrays",
    ("compute_optimal", "ndim"): "C of any shape, evaluated elementwise",
    ("extract_features", "ndim"): "raw on purpose: the model's own error (deepscope cannot "
                                  "know the input rank a model expects)",
    ("layer_features", "ndim"): "raw on purpose: the model's own error, as extract_features",
    # dtypes that do not enter the result, or are cast by contract
    ("edge_detector", "dtype"): "the model is unused (the control of Adebayo et al.)",
    ("edge_detector", "target"): "the target is unused (its shape is still checked)",
    ("keep_features", "dtype"): "scores are only ranked; the output has x's dtype",
    ("remove_features", "dtype"): "scores are only ranked; the output has x's dtype",
    ("filter_normalize", "dtype"): "directions are cast to the parameters' dtype (documented)",
    ("orthogonalize", "dtype"): "directions are cast to the parameters' dtype (documented)",
    ("trajectory_pca", "dtype"): "snapshots are cast to the parameters' dtype (documented)",
    ("loss_barrier", "dtype"): "losses: any 1-D sequence of numbers, cast to float64",
    ("loss_barrier", "type"): "losses: any 1-D sequence of numbers (e.g. a list)",
    ("circle_points", "dtype"): "angles: any 1-D sequence of numbers, cast to float32",
    ("circle_points", "type"): "angles: any 1-D sequence of numbers (e.g. a list)",
    ("self_duality", "dtype"): "computed in float64 whatever the inputs' dtypes",
    ("ncc_mismatch", "dtype"): "computed in float64 whatever the inputs' dtypes",
    ("markov_loss", "dtype"): "computed in float64 whatever the chain's dtype",
    ("ritz_pairs", "dtype"): "T is decomposed on the host in float64 whatever the dtypes of "
                             "alpha and beta (documented: low-precision Lanczos)",
    ("cache_key", "dtype"): "a key hashes any data; training it is fit's concern",
    ("cache_key", "target"): "a key hashes any data; training it is fit's concern",
    ("run_key", "nan"): "a key hashes any config; running it is the run function's concern",
    ("run_key", "inf"): "a key hashes any config; running it is the run function's concern",
    ("run_key", "dtype"): "a key hashes any config; running it is the run function's concern",
    ("run_key", "type"): "a key hashes any config; running it is the run function's concern",
    ("slice_curvature", "dtype"): "losses are read in float64 whatever their dtype (documented)",
    ("slice_curvature", "type"): "losses: any 1-D sequence of numbers (e.g. a list)",
    ("slice_nonconvexity", "dtype"): "losses are read in float64 whatever their dtype",
    ("slice_nonconvexity", "type"): "losses: any (len(ys), len(xs)) nested sequence of numbers",
    ("run_sweep", "nan"): _SWEEP, ("run_sweep", "inf"): _SWEEP, ("run_sweep", "dtype"): _SWEEP,
    ("run_sweep", "type"): _SWEEP,
    ("blank_maps", "ndim"): "(B, D) attributions are a valid layout: (8, 8) is 8 maps of 8",
    ("nearest_centre_accuracy", "dtype"): "features are cast to float64 (documented)",
}

#: Functions not fuzzed, name -> why (keep it short: everything else is fuzzed).
NOT_FUZZED: dict[str, str] = {}


# --------------------------------------------------------------------------------------------
# Recipes: a valid call and where its inputs are


@dataclass
class Recipe:
    """A valid call ``fn(*args, **kwargs)`` (built fresh for each case by ``make``) and paths
    (tuples of positional indices / keyword names / container keys) to its inputs."""

    make: Callable[[], tuple[list, dict]]
    primary: tuple
    partner: tuple | None = None
    target: tuple | None = None
    invoke: Callable | None = None  # how to call, if not fn(*args, **kwargs)
    num_classes: int | None = NUM_CLASSES  # None: no fixed class count, bad labels are -1


def images(n=6, dtype=torch.float32):
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(n), dtype=dtype)


def labels(n=6):
    return torch.arange(n) % NUM_CLASSES


def cnn(dtype=torch.float32):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(96, NUM_CLASSES)).to(dtype)


def feats(n=12, d=5, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def encoder():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 5))


def point(model):
    from deepscope import landscape

    return {n: t.clone() for n, t in landscape.trainable_parameters(model).items()}


def first_key(d):
    return next(iter(d))


def _model_x_target(extra=None, **kwargs):
    """fn(model, x, target, **kwargs): the shape of most attribution methods."""
    def make():
        kw = {"model": cnn(), "x": images(), "target": labels(), **kwargs}
        if extra:
            kw.update(extra())
        return [], kw
    return Recipe(make, ("x",), ("target",), ("target",))


def _model_data(arg="data", model=cnn, **kwargs):
    """fn(model, ..., data=(x, y), ...): the landscape and training functions."""
    def make():
        m = model()
        kw = {"model": m, arg: (images(), labels())}
        kw.update({k: (v(m) if callable(v) and not isinstance(v, type) and k != "loss_fn"
                       and k not in FUNCTION_ARGS else v) for k, v in kwargs.items()})
        return [], kw
    return Recipe(make, (arg, 0), (arg, 1), (arg, 1))


FUNCTION_ARGS = {"attribution", "make_model", "build_model", "sample", "evaluate", "schedule",
                 "matvec", "fit", "n_params", "optimizer"}


def _tensors(names, maker, partner=None, target=None, **kwargs):
    def make():
        return [], {**{n: maker(n) for n in names}, **kwargs}
    return Recipe(make, (names[0],), None if partner is None else (partner,),
                  None if target is None else (target,))


def _scalar(name, value, **kwargs):
    return Recipe(lambda: ([], {name: value, **kwargs}), (name,))


_ce = F.cross_entropy  # a classification loss: integer targets are checked against the model
def _sym(n=6):
    a = torch.randn(n, n, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    return a + a.T


def _chinchilla_data(n=12):
    from deepscope import scaling

    g = np.random.default_rng(0)
    N = np.exp(g.uniform(np.log(1e6), np.log(1e9), n))
    D = np.exp(g.uniform(np.log(1e8), np.log(1e11), n))
    params = scaling.ChinchillaParams(1.7, 400.0, 410.0, 0.34, 0.28)
    return N, D, scaling.chinchilla_loss(N, D, params) * np.exp(g.normal(0, 0.01, n)), params


def _profiles():
    from deepscope import scaling

    N, C, loss = [], [], []
    for c in (1e18, 1e19, 1e20):
        for n in np.geomspace(1e7, 1e10, 7):
            N.append(n)
            C.append(c)
            loss.append(float(scaling.isoflop_loss(n, c, scaling.ChinchillaParams(
                1.7, 400.0, 410.0, 0.34, 0.28))))
    return scaling.isoflop_profiles(np.array(N), np.array(loss), np.array(C))


def _chain():
    from deepscope import scaling

    return scaling.markov_chain(6, seed=0)


def _sample(chain):
    from deepscope import scaling

    return lambda n, seed: scaling.sample_pairs(chain, n, seed=seed)


def _recipes() -> dict[str, Recipe]:
    from deepscope import landscape, saliency, scaling

    r: dict[str, Recipe] = {}
    # -- saliency ---------------------------------------------------------------------------
    for name in ("gradient", "input_x_gradient", "deeplift", "edge_detector"):
        r[name] = _model_x_target()
    r["smoothgrad"] = _model_x_target(samples=4, seed=0)
    r["smoothgrad_sq"] = _model_x_target(samples=4, seed=0)
    r["vargrad"] = _model_x_target(samples=4, seed=0)
    r["local_linear_fit"] = _model_x_target(samples=80, seed=0)
    r["integrated_gradients"] = _model_x_target(steps=8)
    r["expected_gradients"] = _model_x_target(lambda: {"references": images(4)}, samples=8,
                                              seed=0)
    r["occlusion"] = _model_x_target(window=(1, 4, 4), stride=4)
    r["grad_cam"] = _model_x_target(layer="3")
    r["grad_cam_plus_plus"] = _model_x_target(layer="3")
    r["layer_gradients"] = _model_x_target(layer="3")
    r["completeness_gap"] = _model_x_target(lambda: {"attributions": images() * 0})
    r["model_randomization"] = _model_x_target(attribution=saliency.gradient, progress=False)
    r["cascading_randomization"] = _model_x_target(attribution=saliency.gradient,
                                                   progress=False)
    r["pgd_attack"] = Recipe(lambda: ([], {"model": cnn(), "x": images(), "y": labels(),
                                           "eps": 0.1, "steps": 2, "seed": 0}),
                             ("x",), ("y",), ("y",))
    r["robust_accuracy"] = Recipe(lambda: ([], {"model": cnn(), "x": images(), "y": labels(),
                                                "eps": 0.1, "steps": 2, "seed": 0}),
                                  ("x",), ("y",), ("y",))
    r["road"] = Recipe(lambda: ([], {"model": cnn(), "x": images(), "y": labels(),
                                     "scores": images(), "fractions": (0.5,)}),
                       ("x",), ("y",), ("y",))
    r["adversarial_fit"] = _model_data("train", eps=0.1, steps=1, epochs=1, progress=False)
    r["find_layer"] = Recipe(lambda: ([], {"model": cnn(), "layer": "3"}), ("model",))
    r["randomizable_layers"] = Recipe(lambda: ([], {"model": cnn()}), ("model",))
    r["heatmap"] = _tensors(["attributions"], lambda n: images())
    r["gaussian_blur"] = _tensors(["x"], lambda n: images(), sigma=1.0)
    r["rank_features"] = _tensors(["scores"], lambda n: images())
    r["rank_correlation"] = _tensors(["a", "b"], lambda n: images(), partner="b")
    r["keep_features"] = _tensors(["x", "scores"], lambda n: images(), partner="scores", k=8)
    r["remove_features"] = _tensors(["x", "scores"], lambda n: images(), partner="scores",
                                    fraction=0.5)
    r["noisy_linear_impute"] = Recipe(
        lambda: ([], {"x": images(), "remove": images()[:, 0] > 0.5}), ("x",), ("remove",))
    for name in ("pointing_game", "mask_energy", "mask_iou"):
        r[name] = Recipe(lambda: ([], {"maps": images()[:, 0], "mask": images()[:, 0] > 0.5}),
                         ("maps",), ("mask",))
    r["occlusion_windows"] = Recipe(lambda: ([], {"features": (1, 8, 8), "window": (1, 4, 4),
                                                  "stride": 4}), ("features",))
    r["quadrature"] = _scalar("steps", 8)

    def retrain(**kw):
        def make():
            return [], {"make_model": cnn, "train": (images(), labels()),
                        "test": (images(), labels()), "scores_train": images(),
                        "scores_test": images(), "fit_kwargs": {"epochs": 1, "progress": False},
                        **kw}
        return Recipe(make, ("train", 0), ("train", 1), ("train", 1))

    r["roar"] = retrain(fractions=(0.5,))
    r["diffroar"] = retrain(k=16)
    # -- landscape --------------------------------------------------------------------------
    r["trainable_parameters"] = Recipe(lambda: ([], {"model": cnn()}), ("model",))
    r["snapshot"] = Recipe(lambda: ([], {"model": cnn()}), ("model",))
    r["random_direction"] = Recipe(lambda: ([], {"model": cnn(), "seed": 0}), ("model",))

    def points(*names):
        def make():
            m = cnn()
            return [], {n: landscape.random_direction(m, seed=i) if i else point(m)
                        for i, n in enumerate(names)}
        return make

    r["as_vector"] = Recipe(lambda: ([], {"point": point(cnn())}), ("point", "0.weight"))
    r["as_point"] = Recipe(lambda: ([], {"model_or_point": cnn(), "vector": landscape.as_vector(
        point(cnn()))}), ("vector",))
    r["filter_normalize"] = Recipe(points("reference", "direction"), ("direction", "0.weight"))
    r["orthogonalize"] = Recipe(points("against", "direction"), ("direction", "0.weight"))
    lin = torch.linspace(-1, 1, 3)
    r["interpolate"] = _model_data(model_b=point, loss_fn=_ce, alphas=3, progress=False)
    r["interpolate"].make = _rename(r["interpolate"].make, "model", "model_a")
    r["slice_1d"] = _model_data(direction=lambda m: landscape.random_direction(m, seed=0),
                                loss_fn=_ce, alphas=lin, progress=False)
    r["slice_2d"] = _model_data(d1=lambda m: landscape.random_direction(m, seed=0),
                                d2=lambda m: landscape.random_direction(m, seed=1), loss_fn=_ce,
                                xs=lin, ys=lin, progress=False)
    for name in ("hessian_operator", "loss_gradient"):
        r[name] = _model_data(loss_fn=_ce)
    r["hvp"] = _model_data(loss_fn=_ce, v=lambda m: landscape.random_direction(m, seed=0))
    r["hessian_matrix"] = _model_data(loss_fn=_ce)
    r["top_eigenvalues"] = _model_data(loss_fn=_ce, max_iter=6, seed=0)
    r["hessian_trace"] = _model_data(loss_fn=_ce, samples=2, seed=0)
    r["spectral_density"] = _model_data(loss_fn=_ce, iters=4, runs=1)
    r["track_sharpness"] = _model_data(loss_fn=_ce, lr=0.1, steps=2, every=1, max_iter=4,
                                       progress=False)
    r["fit_sam"] = _model_data("train", epochs=1, progress=False)
    r["fit_bezier"] = _model_data(model_b=lambda m: {n: t + 0.1 for n, t in point(m).items()},
                                  loss_fn=_ce, steps=2, progress=False)
    r["fit_bezier"].make = _rename(r["fit_bezier"].make, "model", "model_a")
    r["curve_losses"] = _model_data(curve=lambda m: landscape.BezierCurve(point(m), point(m),
                                                                          point(m), []),
                                    loss_fn=_ce, ts=3)
    r["power_iteration"] = Recipe(lambda: ([], {"matvec": _sym().__matmul__,
                                                "v0": torch.ones(6, dtype=torch.float64),
                                                "max_iter": 50}), ("v0",))
    r["lanczos"] = Recipe(lambda: ([], {"matvec": _sym().__matmul__,
                                        "v0": torch.ones(6, dtype=torch.float64), "iters": 4}),
                          ("v0",))
    r["ritz_pairs"] = Recipe(lambda: ([], {"alpha": torch.tensor([2.0, 1.0, 0.5]),
                                           "beta": torch.tensor([0.3, 0.2])}),
                             ("alpha",), ("beta",))
    r["loss_barrier"] = Recipe(lambda: ([], {"losses": torch.tensor([1.0, 1.5, 2.0, 1.2, 0.9])}),
                               ("losses",))
    r["trajectory_pca"] = Recipe(lambda: ([], {"snapshots": [
        {n: t + i for n, t in point(cnn()).items()} for i in range(3)]}),
        ("snapshots", 0, "0.weight"))
    r["random_walk_like"] = Recipe(lambda: ([], {"snapshots": [
        {n: t + i for n, t in point(cnn()).items()} for i in range(3)]}),
        ("snapshots", 0, "0.weight"))
    r["slice_curvature"] = Recipe(lambda: ([], {"alphas": torch.linspace(-1, 1, 9),
                                                "losses": torch.linspace(-1, 1, 9) ** 2}),
                                  ("losses",), ("alphas",))
    r["slice_nonconvexity"] = Recipe(lambda: ([], {"xs": torch.linspace(-1, 1, 5),
                                                   "ys": torch.linspace(-1, 1, 5),
                                                   "losses": feats(5, 5) ** 2}), ("losses",))
    # -- contrastive ------------------------------------------------------------------------
    for name in ("collapse_indicator", "effective_rank", "singular_spectrum", "uniformity"):
        r[name] = _tensors(["z"], lambda n: feats())
    for name in ("alignment", "info_nce"):
        r[name] = _tensors(["z1", "z2"], lambda n: feats(seed=len(n)), partner="z2")
    r["supcon"] = Recipe(lambda: ([], {"z": feats(), "labels": torch.arange(12) % 3}),
                         ("z",), ("labels",), ("labels",), num_classes=None)
    r["simsiam_loss"] = _tensors(["p1", "z2", "p2", "z1"], lambda n: feats(seed=sum(map(ord, n))),
                                 partner="z2")
    r["negative_weights"] = _tensors(["similarities"], lambda n: feats(), temperature=0.5)
    r["weight_entropy"] = _tensors(["weights"], lambda n: torch.softmax(feats(), 1))
    r["anchor_gradients"] = Recipe(lambda: ([], {"anchor": torch.randn(5), "positive":
                                                 torch.randn(5), "negatives": feats(4),
                                                 "temperature": 0.5}),
                                   ("negatives",), ("anchor",))
    r["circle_points"] = _tensors(["angles"], lambda n: torch.linspace(0, 3, 5))
    for name in ("affine_digits", "augment_digits"):
        r[name] = _tensors(["x"], lambda n: images())
    r["two_views"] = _tensors(["x"], lambda n: images())
    r["embed"] = Recipe(lambda: ([], {"encoder": encoder(), "x": images()}), ("x",))
    r["linear_probe"] = Recipe(lambda: ([], {"encoder": encoder(), "train": (images(), labels()),
                                             "test": (images(), labels()), "max_iter": 5}),
                               ("train", 0), ("train", 1), ("train", 1), num_classes=None)
    r["knn_accuracy"] = Recipe(lambda: ([], {"encoder": encoder(), "train": (images(), labels()),
                                             "test": (images(), labels()), "k": 3}),
                               ("train", 0), ("train", 1), ("train", 1), num_classes=None)
    r["few_label_probe"] = Recipe(lambda: ([], {"encoder": encoder(), "train": (images(),
                                                                            labels()),
                                                "test": (images(), labels()),
                                                "labels_per_class": 1, "draws": 2,
                                                "max_iter": 5}),
                                  ("train", 0), ("train", 1), ("train", 1), num_classes=None)
    r["train_simclr"] = Recipe(lambda: ([], {"net": encoder(), "x": images(), "epochs": 1,
                                             "batch_size": 4, "progress": False}), ("x",))
    r["train_simsiam"] = Recipe(lambda: ([], {"net": encoder(), "predictor": nn.Linear(5, 5),
                                              "x": images(), "epochs": 1, "batch_size": 4,
                                              "progress": False}), ("x",))
    r["circle_toy"] = _scalar("n_negatives", 8)
    r["collapsed_info_nce"] = _scalar("batch_size", 8)
    r["uniform_sphere_uniformity"] = _scalar("dim", 3)
    r["predictor_net"] = _scalar("dim", 8)
    r["projection_net"] = _scalar("in_features", 16)
    # -- collapse ---------------------------------------------------------------------------
    for name in ("class_means", "covariances", "nc1", "collapse_metrics"):
        r[name] = Recipe(lambda: ([], {"features": feats(), "labels": torch.arange(12) % 3}),
                         ("features",), ("labels",), ("labels",), num_classes=None)
    for name in ("equinorm", "equiangularity", "etf_distance", "etf_plane"):
        r[name] = _tensors(["vectors" if name != "etf_plane" else "means"],
                           lambda n: feats(3, 5))
    r["self_duality"] = _tensors(["weight", "centred_means"], lambda n: feats(3, 5),
                                 partner="centred_means")
    r["ncc_mismatch"] = Recipe(lambda: ([], {"features": feats(), "means": feats(3, 5, 1),
                                             "weight": feats(3, 5, 2)}), ("features",),
                               ("weight",))
    r["ufm_loss"] = Recipe(lambda: ([], {"features": feats(), "weight": feats(3, 5, 1),
                                         "bias": torch.zeros(3),
                                         "labels": torch.arange(12) % 3}),
                           ("features",), ("labels",), ("labels",))
    r["worst_equiangularity"] = _tensors(["vectors"], lambda n: feats(3, 5))
    r["plane_regularity"] = _tensors(["means"], lambda n: feats(3, 5))
    r["nearest_centre_accuracy"] = Recipe(lambda: ([], {
        "train_features": feats(), "train_labels": torch.arange(12) % 3,
        "test_features": feats(6, 5, 1), "test_labels": torch.arange(6) % 3, "shots": 2,
        "draws": 2}), ("train_features",), ("train_labels",), ("train_labels",),
        num_classes=None)
    r["simplex_etf"] = _scalar("num_classes", 3, dim=4)
    r["fixed_etf_head"] = _scalar("in_features", 4, num_classes=3)
    r["train_ufm"] = _scalar("num_classes", 3, dim=4, n_per_class=3, steps=2)
    r["find_classifier"] = Recipe(lambda: ([], {"model": cnn()}), ("model",))
    r["record_features"] = Recipe(lambda: ([], {"model": cnn(), "layers": None}), ("model",),
                                  invoke=lambda fn, a, kw: fn(*a, **kw).__enter__())
    r["extract_features"] = Recipe(lambda: ([], {"model": cnn(), "x": images()}), ("x",))
    r["layer_features"] = Recipe(lambda: ([], {"model": cnn(), "x": images(), "layers": ["3"]}),
                                 ("x",))
    r["nc1_by_layer"] = Recipe(lambda: ([], {"model": cnn(), "x": images(), "y": labels(),
                                             "layers": ["3"]}), ("x",), ("y",), ("y",),
                               num_classes=None)
    r["fit_terminal_phase"] = _model_data(steps=2, progress=False)
    # -- scaling ----------------------------------------------------------------------------
    chin = _chinchilla_data

    def arrays(*names, **extra):
        def make():
            N, D, loss, params = chin()
            values = {"N": N, "D": D, "loss": loss, "C": 6 * N * D, "x": N, "y": loss,
                      "params": params}
            return [], {**{n: values[n] for n in names}, **extra}
        return make

    r["power_law"] = Recipe(arrays("x", c=1.0, a=2.0, b=0.3), ("x",))
    r["fit_power_law"] = Recipe(arrays("x", "y"), ("x",), ("y",))
    r["power_law_starts"] = Recipe(arrays("x", "y"), ("x",), ("y",))
    r["chinchilla_loss"] = Recipe(arrays("N", "D", "params"), ("N",), ("D",))
    r["loss_vs_params"] = Recipe(arrays("N", "params"), ("N",))
    r["loss_vs_data"] = Recipe(arrays("D", "params"), ("D",))
    r["isoflop_loss"] = Recipe(arrays("N", "C", "params"), ("N",), ("C",))
    r["chinchilla_objective"] = Recipe(arrays("N", "D", "loss", "params"), ("N",), ("D",))
    r["fit_chinchilla"] = Recipe(arrays("N", "D", "loss", starts=[(1.5, 300.0, 300.0, 0.3,
                                                                    0.3)]), ("N",), ("D",))
    r["compute_optimal"] = Recipe(arrays("C", "params"), ("C",))
    r["as_params"] = Recipe(lambda: ([], {"params": [1.7, 400.0, 410.0, 0.34, 0.28]}),
                            ("params", 0))
    r["chinchilla_grid"] = _scalar("kind", "coarse")
    r["isoflop_profiles"] = Recipe(lambda: ([], {
        "N": np.repeat(np.geomspace(1e7, 1e10, 7)[None], 2, 0).ravel(),
        "loss": np.tile(np.array([3.0, 2.8, 2.7, 2.65, 2.7, 2.8, 3.0]), 2),
        "C": np.repeat([1e18, 1e19], 7)}), ("loss",), ("N",))
    r["fit_isoflop_optima"] = Recipe(lambda: ([], {"profiles": _profiles()}), ("profiles",))
    r["bootstrap"] = Recipe(lambda: ([scaling.fit_power_law, *arrays("x", "y")()[1].values()],
                                     {"n_boot": 3}), (1,), (2,))
    r["lr_schedule"] = Recipe(lambda: ([], {"kind": "cosine", "total_steps": 100}),
                              ("total_steps",))
    r["scheduled_adam"] = Recipe(lambda: ([], {"lr": 1e-3,
                                               "schedule": scaling.lr_schedule("cosine", 10)}),
                                 ("lr",))
    r["schedule_rates"] = Recipe(lambda: ([], {"schedule": scaling.lr_schedule("cosine", 10),
                                               "steps": 10}), ("steps",))
    r["annealing_areas"] = Recipe(lambda: ([], {"lrs": np.linspace(1, 0.1, 20)}), ("lrs",))
    r["annealing_loss"] = Recipe(lambda: ([], {"S1": np.arange(1.0, 11), "S2":
                                               np.linspace(0, 1, 10),
                                               "params": scaling.AnnealingLaw(
                                                   2.0, 0.5, 0.3, 0.002)}), ("S1",), ("S2",))

    def curves():
        law = scaling.AnnealingLaw(2.0, 0.5, 0.3, 0.002)
        out = []
        for kind in ("cosine", "constant", "wsd"):
            lrs = scaling.schedule_rates(scaling.lr_schedule(kind, 200), 200)
            steps = np.arange(20, 201, 20)
            S1, S2 = scaling.annealing_areas(lrs)
            out.append((lrs, steps, scaling.annealing_loss(S1[steps - 1], S2[steps - 1], law)))
        return out

    r["fit_annealing_law"] = Recipe(lambda: ([], {"curves": curves(), "decay": 0.999}),
                                    ("curves", 0, 2), ("curves", 0, 1))
    r["markov_chain"] = _scalar("vocab_size", 6)
    r["bigram_mlp"] = _scalar("vocab_size", 6, width=4)
    r["sample_pairs"] = Recipe(lambda: ([], {"chain": _chain(), "n": 16}), ("n",))
    r["markov_loss"] = Recipe(lambda: ([], {"model": scaling.bigram_mlp(6, 4),
                                            "chain": _chain()}), ("chain", "transition"))
    r["isoflop_configs"] = Recipe(lambda: ([], {"sizes": [2, 4], "budgets": [1e4, 1e5],
                                                "n_params": lambda s: 100 * s}), ("budgets",))

    def train_spec():
        chain = _chain()
        return scaling.TrainSpec(build_model=lambda s: scaling.bigram_mlp(6, s),
                                 sample=_sample(chain),
                                 evaluate=lambda m: scaling.markov_loss(m, chain), batch_size=32)

    def markov_spec():
        return scaling.MarkovSpec(_chain(), batch_size=32)

    r["run_sweep"] = Recipe(lambda: ([], {"run": scaling.train_run, "spec": train_spec(),
                                          "configs": [(2, 64), (4, 64)], "progress": False}),
                            ("configs", 0, 1))
    r["train_run"] = Recipe(lambda: ([], {"spec": train_spec(), "config": [2, 64]}),
                            ("config", 1))
    r["markov_run"] = Recipe(lambda: ([], {"spec": markov_spec(), "config": [2, 64]}),
                             ("config", 1))
    r["run_key"] = Recipe(lambda: ([], {"run": scaling.markov_run, "spec": markov_spec(),
                                        "config": [2, 64]}), ("config", 1))
    r["bootstrap_isoflop"] = Recipe(lambda: ([], {
        "N": np.repeat(np.geomspace(1e7, 1e10, 7)[None], 3, 0).ravel(),
        "loss": np.tile(np.array([3.0, 2.8, 2.7, 2.65, 2.7, 2.8, 3.0]), 3)
        * np.repeat([1.0, 0.9, 0.8], 7),
        "C": np.repeat([1e18, 1e19, 1e20], 7), "n_boot": 3}), ("loss",), ("N",))
    r["percentile_intervals"] = Recipe(lambda: ([], {"samples": {"a": np.linspace(0.3, 0.4, 20)},
                                                     "ci": 0.9}), ("samples", "a"))
    r["markov_sweep"] = Recipe(lambda: ([], {"chain": _chain(), "configs": [(2, 64), (4, 64)],
                                             "batch_size": 32, "progress": False}),
                               ("configs", 0, 1))

    def curve_run():
        chain = _chain()
        return [], {"model": scaling.bigram_mlp(6, 4), "sample": _sample(chain),
                    "evaluate": lambda m: scaling.markov_loss(m, chain),
                    "schedule": scaling.lr_schedule("cosine", 20), "steps": 20, "eval_every": 10,
                    "batch_size": 16}

    r["loss_curve"] = Recipe(curve_run, ("steps",))
    # -- train ------------------------------------------------------------------------------
    r["fit"] = _model_data("train", epochs=1, progress=False)
    r["evaluate"] = _model_data()
    r["cached_fit"] = _model_data("train", epochs=1, progress=False)
    r["cache_key"] = _model_data("train", epochs=1)
    r["default_cache_dir"] = Recipe(lambda: ([], {}), ())
    r["clean_stale_temp_files"] = Recipe(lambda: ([], {"folder": "."}), ("folder",))
    return r


def _rename(make, old, new):
    def renamed():
        args, kw = make()
        kw[new] = kw.pop(old)
        return args, kw
    return renamed


#: Default arguments by parameter name, for public functions added without a recipe.
INFERRED = {
    "model": cnn, "net": cnn, "encoder": encoder, "x": images, "images": images,
    "target": labels, "y": labels, "labels": lambda: torch.arange(12) % 3,
    "features": feats, "z": feats, "z1": feats, "z2": lambda: feats(seed=1),
    "data": lambda: (images(), labels()), "train": lambda: (images(), labels()),
    "test": lambda: (images(), labels()), "loss_fn": lambda: F.cross_entropy,
    "attributions": images, "maps": lambda: images()[:, 0],
    "mask": lambda: images()[:, 0] > 0.5, "scores": images,
}
_PRIMARY_ORDER = ("x", "images", "features", "z", "z1", "data", "train", "attributions", "maps",
                  "scores", "model", "net", "encoder")


def infer_recipe(fn) -> Recipe | None:
    """A recipe from parameter names alone (`INFERRED`), or None if a required one is unknown."""
    required = [p for p in inspect.signature(fn).parameters.values()
                if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if any(p.name not in INFERRED for p in required) or not required:
        return None
    names = [p.name for p in required]
    primary = next((n for n in _PRIMARY_ORDER if n in names), names[0])
    path = (primary, 0) if primary in ("data", "train") else (primary,)
    target = next((n for n in ("target", "y", "labels") if n in names), None)
    partner = (primary, 1) if primary in ("data", "train") else \
        (target,) if target else (("z2",) if primary == "z1" else None)
    target_path = (primary, 1) if primary in ("data", "train") else \
        (target,) if target else None
    return Recipe(lambda: ([], {n: INFERRED[n]() for n in names}), path, partner, target_path)


# --------------------------------------------------------------------------------------------
# Bad inputs


class NA(Exception):
    """The kind does not apply to this function."""


def get(args, kwargs, path):
    value = args[path[0]] if isinstance(path[0], int) else kwargs[path[0]]
    for key in path[1:]:
        value = value[key] if not hasattr(value, "_fields") or isinstance(key, int) else \
            getattr(value, key)
    return value


def replaced(container, key, value):
    if isinstance(container, dict):
        return {**container, key: value}
    if hasattr(container, "_replace"):
        field_name = container._fields[key] if isinstance(key, int) else key
        return container._replace(**{field_name: value})
    items = list(container)
    items[key] = value
    return type(container)(items) if isinstance(container, tuple) else items


def put(args, kwargs, path, value):
    if len(path) == 1:
        if isinstance(path[0], int):
            args = list(args)
            args[path[0]] = value
        else:
            kwargs = {**kwargs, path[0]: value}
        return args, kwargs
    parent = get(args, kwargs, path[:-1])
    return put(args, kwargs, path[:-1], replaced(parent, path[-1], value))


def _leaves(value, skip):
    """Yield the tensors and modules inside an argument (not the primary input itself)."""
    if value is skip:
        return
    if isinstance(value, torch.Tensor | nn.Module):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v, skip)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _leaves(v, skip)


def _others(args, kwargs, leaf):
    found = [t for v in [*args, *kwargs.values()] for t in _leaves(v, leaf)]
    devices = [t for t in found if isinstance(t, torch.Tensor) or any(True for _ in t.parameters())]
    floating = [t for t in found if (t.is_floating_point() if isinstance(t, torch.Tensor) else
                                     any(p.is_floating_point() for p in t.parameters()))]
    return devices, floating


def bad_value(leaf, kind, args, kwargs):
    """The primary input ``leaf`` made bad in the given way (raises NA if it cannot be)."""
    devices, floating = _others(args, kwargs, leaf)
    if isinstance(leaf, nn.Module):
        if kind == "type":
            return "a model"
        raise NA
    if isinstance(leaf, torch.Tensor):
        t = leaf.detach().clone()
        if kind in ("nan", "inf"):
            if not t.is_floating_point() or t.numel() == 0:
                raise NA
            t.view(-1)[0] = math.nan if kind == "nan" else math.inf
            return t
        if kind == "device":
            if not devices:
                raise NA
            return t.to("meta")
        if kind == "dtype":
            if t.is_floating_point():
                return t.half() if floating else t.round().long()
            return t.float()
        if kind == "ndim":
            if t.dim() == 0:
                raise NA
            return t[0] if t.dim() >= 2 else t[None].expand(2, -1).clone()
        if kind == "empty":
            if t.dim() == 0:
                raise NA
            return t[:0]
        if kind == "type":
            return t.tolist()
        raise NA
    if isinstance(leaf, np.ndarray):
        a = leaf.copy()
        if kind in ("nan", "inf"):
            a = a.astype(np.float64)
            a.reshape(-1)[0] = np.nan if kind == "nan" else np.inf
            return a
        if kind == "device":
            return torch.as_tensor(a).to("meta")
        if kind == "dtype":
            return a.astype(str)
        if kind == "ndim":
            return a[0] if a.ndim >= 2 else np.stack([a, a])
        if kind == "empty":
            return a[:0]
        if kind == "type":
            return "not an array"
        raise NA
    if isinstance(leaf, bool):
        raise NA
    if isinstance(leaf, int | float):
        if kind in ("nan", "inf"):
            return math.nan if kind == "nan" else math.inf
        if kind == "dtype":
            if isinstance(leaf, float):
                raise NA
            return float(leaf) + 0.5
        if kind == "type":
            return str(leaf)
        raise NA
    if isinstance(leaf, str):
        if kind == "type":
            return 3
        raise NA
    if isinstance(leaf, list):  # a list of numbers (budgets, ...)
        if kind in ("nan", "inf"):
            return [math.nan if kind == "nan" else math.inf, *leaf[1:]]
        if kind == "empty":
            return []
        if kind == "type":
            return "not a list"
        raise NA
    raise NA


def bad_call(recipe: Recipe, kind: str):
    """Return (args, kwargs) of the call with a bad input of ``kind``, or raise NA."""
    args, kwargs = recipe.make()
    if kind == "batch":
        if recipe.partner is None:
            raise NA
        partner = get(args, kwargs, recipe.partner)
        if not isinstance(partner, torch.Tensor | np.ndarray) or len(partner) < 2:
            raise NA
        return put(args, kwargs, recipe.partner, partner[:-1])
    if kind == "target":
        if recipe.target is None:
            raise NA
        labels_ = get(args, kwargs, recipe.target)
        if isinstance(labels_, int):
            return put(args, kwargs, recipe.target, 10**6)
        labels_ = labels_.clone()
        labels_[0] = -1 if recipe.num_classes is None else recipe.num_classes + 7
        return put(args, kwargs, recipe.target, labels_)
    if not recipe.primary:
        raise NA
    leaf = get(args, kwargs, recipe.primary)
    return put(args, kwargs, recipe.primary, bad_value(leaf, kind, args, kwargs))


# --------------------------------------------------------------------------------------------
# Running and judging


def _numbers(value, depth=0):
    """Yield the floating-point numbers inside a result (tensors, arrays, fields, containers)."""
    if depth > 4:
        return
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() and value.device.type != "meta":
            yield value.detach()
    elif isinstance(value, np.ndarray):
        if np.issubdtype(value.dtype, np.floating):
            yield torch.as_tensor(value)
    elif isinstance(value, float):
        yield torch.tensor(value)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _numbers(v, depth + 1)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _numbers(v, depth + 1)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from _numbers(getattr(value, f.name), depth + 1)


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout


def outcome(fn, recipe: Recipe, kind: str) -> tuple[str, str]:
    """Run one case; return (outcome, detail). Outcomes: "n/a", "named", "raw", "silent-finite"
    (a finite answer from a non-finite input), "silent" (any other answer to a bad input)."""
    try:
        args, kwargs = bad_call(recipe, kind)
    except NA:
        return "n/a", ""
    invoke = recipe.invoke or (lambda f, a, kw: f(*a, **kw))
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(CASE_SECONDS)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = invoke(fn, args, kwargs)
    except (ValueError, TypeError) as err:
        message = str(err)
        return ("named" if NAMED.match(message) else "raw",
                f"{type(err).__name__}: {message[:160]}")
    except _Timeout:
        return "raw", f"no answer after {CASE_SECONDS} s"
    except Exception as err:  # noqa: BLE001 - every other exception is a raw failure
        return "raw", f"{type(err).__name__}: {str(err)[:160]}"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    numbers = list(_numbers(result))
    if kind in ("nan", "inf") and numbers and all(bool(torch.isfinite(t).all()) for t in numbers):
        return "silent-finite", f"returned {type(result).__name__}"
    return "silent", f"returned {type(result).__name__}"


def public_functions() -> dict[str, Callable]:
    found = {}
    for topic in TOPICS:
        module = importlib.import_module(f"deepscope.{topic}")
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            if inspect.isfunction(obj):
                found[name] = obj
    return found


def plan():
    """Return (cases, missing): cases as (name, fn, recipe), and functions without a recipe."""
    recipes = _recipes()
    cases, missing = [], []
    for name, fn in public_functions().items():
        if name in NOT_FUZZED:
            continue
        recipe = recipes.get(name) or infer_recipe(fn)
        if recipe is None:
            missing.append(name)
        else:
            cases.append((name, fn, recipe))
    return cases, missing


def run_all(verbose=False):
    cases, missing = plan()
    table = {}
    for name, fn, recipe in cases:
        args, kwargs = recipe.make()
        invoke = recipe.invoke or (lambda f, a, kw: f(*a, **kw))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                invoke(fn, args, kwargs)  # the recipe itself must be a valid call
        except Exception as err:  # noqa: BLE001
            for kind in KINDS:
                table[name, kind] = ("recipe-error", f"{type(err).__name__}: {str(err)[:160]}")
            if verbose:
                print(f"{name:28s} recipe fails: {type(err).__name__}: {err}", flush=True)
            continue
        for kind in KINDS:
            table[name, kind] = outcome(fn, recipe, kind)
            if verbose and table[name, kind][0] not in ("named", "n/a"):
                print(f"{name:28s} {kind:7s} {table[name, kind][0]:14s} {table[name, kind][1]}",
                      flush=True)
    return table, missing


def summary(table) -> str:
    counts = Counter(out for out, _ in table.values())
    applicable = sum(v for k, v in counts.items() if k != "n/a")
    accepted = sum(1 for key, (out, _) in table.items() if key in ACCEPTED and out != "n/a")
    lines = [f"{len({n for n, _ in table})} functions, {len(table)} cases, {applicable} "
             f"applicable ({accepted} of them documented as valid input)"]
    for out in ("named", "raw", "silent-finite", "silent", "recipe-error"):
        lines.append(f"  {out:14s} {counts[out]:4d}  ({100 * counts[out] / max(applicable, 1):.1f}%"
                     " of applicable)")
    for kind in KINDS:
        per = Counter(out for (_, k), (out, _) in table.items() if k == kind)
        lines.append(f"  {kind:7s} " + "  ".join(f"{o} {per[o]}" for o in
                                                ("named", "raw", "silent-finite", "silent",
                                                 "n/a")))
    return "\n".join(lines)


@pytest.fixture(scope="module")
def fuzzed():
    table, _ = run_all()
    return table


def test_every_public_function_has_a_recipe():
    _, missing = plan()
    assert not missing, (f"public functions without a fuzz recipe: {missing}; add one to "
                         "`_recipes` (or, with a reason, to NOT_FUZZED)")


def test_every_recipe_is_a_valid_call(fuzzed):
    broken = {name: detail for (name, _), (out, detail) in fuzzed.items() if out == "recipe-error"}
    assert not broken, f"recipes that fail on valid input: {broken}"


def test_no_finite_answer_from_a_non_finite_input(fuzzed):
    silent = {key: detail for key, (out, detail) in fuzzed.items() if out == "silent-finite"}
    assert not silent, f"finite answers from NaN/inf inputs: {silent}"


def test_every_bad_input_raises_a_named_error_or_is_documented(fuzzed):
    bad = {key: f"{out}: {detail}" for key, (out, detail) in fuzzed.items()
           if out not in ("named", "n/a") and key not in ACCEPTED}
    assert not bad, "\n".join(f"{k}: {v}" for k, v in sorted(bad.items()))
    raw_accepted = {key: detail for key, (out, detail) in fuzzed.items()
                    if key in ACCEPTED and out == "raw"
                    and not ACCEPTED[key].startswith("raw on purpose")}
    assert not raw_accepted, f"documented acceptances that now fail raw: {raw_accepted}"


def test_at_least_90_percent_of_invalid_cases_are_named(fuzzed):
    applicable = [out for key, (out, _) in fuzzed.items() if out != "n/a"]
    named = sum(out == "named" for out in applicable)
    assert named >= 0.9 * len(applicable), summary(fuzzed)


if __name__ == "__main__":
    import deepscope

    print("deepscope from", deepscope.__file__)
    results, without = run_all(verbose="-v" in sys.argv)
    print(summary(results))
    if without:
        print("no recipe:", without)
