"""`deepscope.saliency` against Captum (same run, interleaved) and against the raw work.

- IG: 64 Gauss-Legendre steps x 32 images, `small_cnn` on 24x24 digit canvases, all steps in
  one batched pass for both libraries.
- SmoothGrad: 50 noisy samples x 32 images against Captum's ``NoiseTunnel(Saliency)``.
- IG against the raw work: the same 64 x 32 rows as one plain forward + backward pass of the
  target scores on a prebuilt batch, so the ratio is what interpolating, validating and
  accumulating costs.
- Noisy linear imputation (ROAD's fill, DiffROAR with ``fill="linear"``): one call for 1,797
  BlockDigits images keeping 8 of 128 pixels (one block-diagonal sparse solve) against one call
  per image (one solve per image, the previous algorithm's work).
"""

from __future__ import annotations

import warnings

import torch

from . import Benchmark

STEPS, IMAGES, SAMPLES = 64, 32, 50


def benchmarks() -> list[Benchmark]:
    from deepscope import data, models
    from deepscope import saliency as S

    torch.manual_seed(0)
    model = models.small_cnn().eval()
    x = data.digit_canvas("test", n=IMAGES, size=24, seed=0).x
    target = torch.arange(IMAGES) % 10
    out = []

    try:
        from captum.attr import IntegratedGradients, NoiseTunnel, Saliency
    except ImportError:  # pragma: no cover - the oracle extra is missing
        IntegratedGradients = None

    if IntegratedGradients is not None:
        ig = IntegratedGradients(model)
        noise_tunnel = NoiseTunnel(Saliency(model))

        def captum_ig():
            ig.attribute(x, target=target, n_steps=STEPS, method="gausslegendre")

        def captum_smoothgrad():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                noise_tunnel.attribute(x, nt_type="smoothgrad", nt_samples=SAMPLES, stdevs=0.15,
                                       target=target, abs=False)

        out.append(Benchmark(f"IG: {STEPS} steps x {IMAGES} images, small_cnn 24px",
                             lambda: S.integrated_gradients(model, x, target, steps=STEPS),
                             captum_ig, reference_name="captum IntegratedGradients",
                             target=1.0, repeats=7))
        out.append(Benchmark(f"SmoothGrad: {SAMPLES} samples x {IMAGES} images",
                             lambda: S.smoothgrad(model, x, target, 0.15, SAMPLES),
                             captum_smoothgrad, reference_name="captum NoiseTunnel",
                             target=1.0, repeats=7))

    alphas, _ = S.quadrature(STEPS)
    points = (alphas.float().view(-1, 1, 1, 1, 1) * x[None]).reshape(-1, *x.shape[1:])
    rows = target.repeat(STEPS)

    def raw():
        inputs = points.detach().requires_grad_(True)
        scores = model(inputs).gather(1, rows[:, None]).sum()
        torch.autograd.grad(scores, inputs)

    out.append(Benchmark(f"IG: {STEPS} steps x {IMAGES} images vs raw",
                         lambda: S.integrated_gradients(model, x, target, steps=STEPS), raw,
                         reference_name="1 fwd+bwd, same rows", target=1.3, repeats=7))

    blocks = data.block_digits("all", seed=0).x
    generator = torch.Generator().manual_seed(0)
    order = torch.rand(blocks.shape, generator=generator).flatten(1).argsort(1)
    remove = torch.ones(blocks.flatten(1).shape, dtype=torch.bool)
    remove.scatter_(1, order[:, :8], False)
    remove = remove.view(blocks.shape)

    def impute_per_image():
        for i in range(len(blocks)):
            S.noisy_linear_impute(blocks[i:i + 1], remove[i:i + 1], noise=0.0)

    out.append(Benchmark(f"noisy linear imputation: {len(blocks)} 16x8 images, keep 8",
                         lambda: S.noisy_linear_impute(blocks, remove, noise=0.0),
                         impute_per_image, reference_name="one call per image", target=1.0,
                         repeats=3))
    return out
