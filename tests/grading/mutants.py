"""Deliberately wrong answers: each must lose points on its question (the grader can fail).

``MUTANTS[assignment_id][function]`` lists ``(name, source)`` pairs; the source replaces the
answer cell that defines ``function`` in the master notebook.
"""

_IG_HEAD = """def integrated_gradients(model, x, target, baseline=None, steps=64):
    if baseline is None:
        baseline = torch.zeros_like(x)
    target = torch.as_tensor(target, device=x.device).expand(x.shape[0])
    rows = torch.arange(x.shape[0], device=x.device)
"""
_IG_LOOP = """    total = torch.zeros_like(x)
    for alpha in alphas:
        point = (baseline + alpha * (x - baseline)).detach().requires_grad_(True)
        score = model(point)[rows, target].sum()
        total += torch.autograd.grad(score, point)[0]
"""
_MIDPOINT = "    alphas = (torch.arange(steps, dtype=x.dtype, device=x.device) + 0.5) / steps\n"

_SG = """def smoothgrad(model, x, target, sigma=0.15, samples=50, noise=None):
    if noise is None:
        noise = torch.randn(samples, *x.shape, dtype=x.dtype, device=x.device)
    target = torch.as_tensor(target, device=x.device).expand(x.shape[0])
    rows = torch.arange(x.shape[0], device=x.device)
    total = torch.zeros_like(x)
    for eps in noise:
        point = (x + {perturbation}).detach().requires_grad_(True)
        score = model(point)[rows, target].sum()
        grad = torch.autograd.grad(score, point)[0]
        total += {accumulate}
    return total / len(noise)
"""

_CAM = """def grad_cam(model, x, target, layer):
    saved = {{}}
    handle = layer.register_forward_hook(lambda m, i, out: saved.update(A=out))
    try:
        scores = model(x)
    finally:
        handle.remove()
    A = saved["A"]
    target = torch.as_tensor(target, device=x.device).expand(x.shape[0])
    rows = torch.arange(x.shape[0], device=x.device)
    (G,) = torch.autograd.grad(scores[rows, target].sum(), A)
    {body}
"""

MUTANTS = {
    "01_saliency": {
        "integrated_gradients": [
            ("without the (x - baseline) factor",
             _IG_HEAD + _MIDPOINT + _IG_LOOP + "    return total / steps\n"),
            ("left Riemann sum instead of the midpoint rule",
             _IG_HEAD + "    alphas = torch.arange(steps, dtype=x.dtype, device=x.device) / steps\n"
             + _IG_LOOP + "    return (x - baseline) * total / steps\n"),
            ("ignores the baseline it is given",
             _IG_HEAD.replace("    if baseline is None:\n", "    if True:\n") + _MIDPOINT + _IG_LOOP
             + "    return (x - baseline) * total / steps\n"),
            ("computes in float32",
             _IG_HEAD + "    x, baseline = x.float(), baseline.float()\n"
             "    alphas = (torch.arange(steps) + 0.5) / steps\n" + _IG_LOOP
             + "    return (x - baseline) * total / steps\n"),
        ],
        "smoothgrad": [
            ("sigma relative to the input range",
             _SG.format(perturbation="sigma * (x.max() - x.min()) * eps", accumulate="grad")),
            ("averages squared gradients (SmoothGrad-squared)",
             _SG.format(perturbation="sigma * eps", accumulate="grad ** 2")),
            ("noise not scaled by sigma", _SG.format(perturbation="eps", accumulate="grad")),
        ],
        "grad_cam": [
            ("without the ReLU",
             _CAM.format(body="return (G.mean(dim=(2, 3), keepdim=True) * A).sum(dim=1)")),
            ("sums the gradients instead of averaging them",
             _CAM.format(body="return torch.relu((G.sum(dim=(2, 3), keepdim=True) * A).sum(1))")),
            ("gradient times activation, without pooling the gradients",
             _CAM.format(body="return torch.relu((G * A).sum(dim=1))")),
        ],
    },
}
