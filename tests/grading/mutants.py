"""Deliberately wrong answers: each must lose points on its question (the grader can fail).

``MUTANTS[assignment_id][function]`` lists ``(name, change)`` pairs. A change is either the
full source of a wrong answer cell, or a list of ``(old, new)`` text replacements applied to the
master's own solution (markers removed), so that such mutants follow the master when it changes.
"""

import re

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

_FN = """def filter_normalize(direction, weights):
    out = {{}}
    for name, d in direction.items():
        w = weights[name]
        if d.dim() <= 1:
            out[name] = {bias}
            continue
        shape = (-1,) + (1,) * (d.dim() - 1)
        {body}
    return out
"""
_FN_FILTERS = ("d_norm = d.flatten(1).norm(dim=1).view(shape)\n"
               "        w_norm = w.flatten(1).norm(dim=1).view(shape)\n")

_HVP_HEAD = """def hvp(model, loss_fn, x, y, v):
    params = [p for p in model.parameters() if p.requires_grad]
"""

_POWER = """def power_iteration(matvec, v0, iters=100):
    v = v0 / v0.norm()
    for _ in range({iters}):
        w = matvec(v)
        v = w / w.norm()
    {ret}
"""

_HUTCH = """def hutchinson_trace(matvec, like, samples=100, seed=0):
    generator = torch.Generator().manual_seed(seed)
    total = 0.0
    for _ in range(samples):
        z = {probe}
        total += float({quad})
    return total {scale}
"""
_RADEMACHER = "(torch.randint(0, 2, like.shape, generator=generator) * 2 - 1).to(like)"

_NCE = """def info_nce(z1, z2, temperature=0.5):
    n = z1.shape[0]
    z = {z}
    logits = z @ z.T / temperature
    eye = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    {mask}
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy({rows})
"""
_NORMALIZED = "F.normalize(torch.cat([z1, z2]), dim=1)"
_MASK = "logits = logits.masked_fill(eye, float('-inf'))"

_UNIF = """def uniformity(z, t=2.0):
    f = {f}
    n = f.shape[0]
    i, j = torch.triu_indices(n, n, offset={offset}, device=f.device)
    squared = (f[i] - f[j]).pow(2).sum(dim=1)
    return {ret}
"""
_LSE = "torch.logsumexp(-t * squared, dim=0) - math.log(len(squared))"

_ERANK = """def effective_rank(z):
    z = z.double()
    {prep}
    sigma = torch.linalg.svdvals(z){power}
    p = sigma / sigma.sum()
    h = -torch.special.xlogy(p, p).sum()
    return {ret}
"""

_STATS = """def class_means_and_covariances(features, labels, num_classes):
    n, d = features.shape
    means = torch.zeros(num_classes, d, dtype=features.dtype, device=features.device)
    means.index_add_(0, labels, features)
    counts = torch.bincount(labels, minlength=num_classes).to(features.dtype)
    means = means / counts[:, None]
    global_mean = {global_mean}
    within = features - means[labels]
    centred = {centred}
    return means, global_mean, within.T @ within / {n}, centred.T @ centred / num_classes
"""

_NC1 = """def nc1(features, labels, num_classes):
    n, d = features.shape
    means = torch.stack([features[labels == c].mean(0) for c in range(num_classes)])
    within = features - means[labels]
    centred = means - features.mean(0)
    sigma_w = within.T @ within / n
    sigma_b = centred.T @ centred / num_classes
    return {ret}
"""

_ETF = """def simplex_etf(num_classes, dim):
    c = num_classes
    {body}
"""



def mutate(solution: str, change) -> str:
    """Return the mutant's source: ``change`` itself, or the solution with its replacements."""
    if isinstance(change, str):
        return change
    for old, new in change:
        assert old in solution, f"the master's solution no longer contains {old!r}"
        solution = solution.replace(old, new)
    return solution


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
    "02_loss_landscapes": {
        "filter_normalize": [
            ("normalises whole layers instead of filters",
             _FN.format(bias="torch.zeros_like(d)", body="out[name] = d / d.norm() * w.norm()")),
            ("leaves the biases as they are",
             _FN.format(bias="d.clone()",
                        body=_FN_FILTERS + "        out[name] = d / d_norm * w_norm")),
            ("unit filters (forgets the weights' norms)",
             _FN.format(bias="torch.zeros_like(d)",
                        body=_FN_FILTERS + "        out[name] = d / d_norm")),
        ],
        "hvp": [
            ("g (g . v), the outer product of gradients",
             _HVP_HEAD + "    g = torch.autograd.grad(loss_fn(model(x), y), params)\n"
             "    g = torch.cat([t.reshape(-1) for t in g])\n    return g * (g @ v)\n"),
            ("central finite differences of the gradient",
             _HVP_HEAD + "    def grad():\n"
             "        g = torch.autograd.grad(loss_fn(model(x), y), params)\n"
             "        return torch.cat([t.reshape(-1) for t in g])\n"
             "    eps, out = 1e-3, []\n"
             "    with torch.no_grad():\n"
             "        theta = torch.nn.utils.parameters_to_vector(params)\n"
             "        torch.nn.utils.vector_to_parameters(theta + eps * v, params)\n"
             "    plus = grad()\n"
             "    with torch.no_grad():\n"
             "        torch.nn.utils.vector_to_parameters(theta - eps * v, params)\n"
             "    minus = grad()\n"
             "    with torch.no_grad():\n"
             "        torch.nn.utils.vector_to_parameters(theta, params)\n"
             "    return (plus - minus) / (2 * eps)\n"),
            ("differentiates a detached gradient (no create_graph)",
             _HVP_HEAD + "    g = torch.autograd.grad(loss_fn(model(x), y), params)\n"
             "    flat = torch.cat([t.reshape(-1) for t in g])\n"
             "    hv = torch.autograd.grad(flat @ v, params)\n"
             "    return torch.cat([h.reshape(-1) for h in hv])\n"),
        ],
        "power_iteration": [
            ("eigenvalue as ||A v|| (loses the sign)",
             _POWER.format(iters="iters", ret="return float(matvec(v).norm()), v")),
            ("two iterations whatever iters says",
             _POWER.format(iters="2", ret="return float(v @ matvec(v)), v")),
            ("returns the unnormalised last product",
             _POWER.format(iters="iters", ret="return float(v @ matvec(v)), matvec(v)")),
        ],
        "hutchinson_trace": [
            ("Gaussian probes",
             _HUTCH.format(probe="torch.randn(like.shape, generator=generator).to(like)",
                           quad="z @ matvec(z)", scale="/ samples")),
            ("sums instead of averaging",
             _HUTCH.format(probe=_RADEMACHER, quad="z @ matvec(z)", scale="")),
            ("z . z instead of z . A z",
             _HUTCH.format(probe=_RADEMACHER, quad="z @ z", scale="/ samples")),
        ],
    },
    "03_contrastive_geometry": {
        "info_nce": [
            ("the anchor itself stays in the denominator",
             _NCE.format(z=_NORMALIZED, mask="pass", rows="logits, positives")),
            ("only the first view's N rows are anchors",
             _NCE.format(z=_NORMALIZED, mask=_MASK, rows="logits[:n], positives[:n]")),
            ("dot products without normalising",
             _NCE.format(z="torch.cat([z1, z2])", mask=_MASK, rows="logits, positives")),
        ],
        "alignment": [
            ("without normalising",
             "def alignment(z1, z2, alpha=2.0):\n"
             "    return (z1 - z2).norm(dim=1).pow(alpha).mean()\n"),
            ("squared distances whatever alpha",
             "def alignment(z1, z2, alpha=2.0):\n"
             "    d = F.normalize(z1, dim=1) - F.normalize(z2, dim=1)\n"
             "    return d.norm(dim=1).pow(2).mean()\n"),
            ("sums over pairs instead of averaging",
             "def alignment(z1, z2, alpha=2.0):\n"
             "    d = F.normalize(z1, dim=1) - F.normalize(z2, dim=1)\n"
             "    return d.norm(dim=1).pow(alpha).sum()\n"),
        ],
        "uniformity": [
            ("without normalising", _UNIF.format(f="z", offset=1, ret=_LSE)),
            ("counts each point with itself (pairs i <= j)",
             _UNIF.format(f="F.normalize(z, dim=1)", offset=0, ret=_LSE)),
            ("mean of the exponent instead of the log of the mean",
             _UNIF.format(f="F.normalize(z, dim=1)", offset=1, ret="(-t * squared).mean()")),
        ],
        "effective_rank": [
            ("squared singular values (the covariance spectrum)",
             _ERANK.format(prep="pass", power=".pow(2)", ret="torch.exp(h)")),
            ("centres the rows first",
             _ERANK.format(prep="z = z - z.mean(0)", power="", ret="torch.exp(h)")),
            ("returns the entropy instead of its exponential",
             _ERANK.format(prep="pass", power="", ret="h")),
        ],
    },
    "04_neural_collapse": {
        "class_means_and_covariances": [
            ("Sigma_W divided by N - C (pooled, unbiased)",
             _STATS.format(global_mean="features.mean(0)", centred="means - global_mean",
                           n="(n - num_classes)")),
            ("the global mean as the mean of the class means",
             _STATS.format(global_mean="means.mean(0)", centred="means - global_mean", n="n")),
            ("Sigma_B of uncentred means",
             _STATS.format(global_mean="features.mean(0)", centred="means", n="n")),
        ],
        "nc1": [
            ("the inverse instead of the pseudo-inverse",
             _NC1.format(ret="float(torch.trace(sigma_w @ torch.linalg.inv(sigma_b))) / "
                             "num_classes")),
            ("without the 1/C", _NC1.format(ret="float(torch.trace(sigma_w @ "
                                                "torch.linalg.pinv(sigma_b)))")),
            ("a ratio of traces", _NC1.format(ret="float(sigma_w.trace() / sigma_b.trace())")),
        ],
        "simplex_etf": [
            ("the centred identity, rows not normalised (needs dim >= C)",
             _ETF.format(body="m = torch.zeros(c, dim)\n"
                              "    m[:, :c] = torch.eye(c) - 1.0 / c\n    return m")),
            ("orthonormal rows (cosine 0, not -1/(C-1))",
             _ETF.format(body="return torch.eye(c, dim)")),
        ],
        "etf_distance": [
            ("the Gram matrix not normalised",
             "def etf_distance(vectors):\n    c = vectors.shape[0]\n"
             "    gram = vectors @ vectors.T\n"
             "    target = torch.eye(c, dtype=vectors.dtype) - 1.0 / c\n"
             "    return float((gram - target / (c - 1) ** 0.5).norm())\n"),
            ("the target without 1/sqrt(C - 1)",
             "def etf_distance(vectors):\n    c = vectors.shape[0]\n"
             "    gram = vectors @ vectors.T\n"
             "    target = torch.eye(c, dtype=vectors.dtype) - 1.0 / c\n"
             "    return float((gram / gram.norm() - target).norm())\n"),
        ],
        "self_duality": [
            ("W - M without normalising",
             "def self_duality(weight, centred_means):\n"
             "    return float((weight - centred_means).norm())\n"),
            ("squared distance",
             "def self_duality(weight, centred_means):\n"
             "    d = weight / weight.norm() - centred_means / centred_means.norm()\n"
             "    return float(d.norm() ** 2)\n"),
        ],
        "ncc_mismatch": [
            ("ignores the bias",
             "def ncc_mismatch(features, means, weight, bias=None):\n"
             "    nearest = torch.cdist(features, means).argmin(dim=1)\n"
             "    return float(((features @ weight.T).argmax(1) != nearest).double().mean())\n"),
            ("the farthest class mean",
             "def ncc_mismatch(features, means, weight, bias=None):\n"
             "    logits = features @ weight.T + (0 if bias is None else bias)\n"
             "    nearest = torch.cdist(features, means).argmax(dim=1)\n"
             "    return float((logits.argmax(1) != nearest).double().mean())\n"),
            ("the agreement instead of the mismatch",
             "def ncc_mismatch(features, means, weight, bias=None):\n"
             "    logits = features @ weight.T + (0 if bias is None else bias)\n"
             "    nearest = torch.cdist(features, means).argmin(dim=1)\n"
             "    return float((logits.argmax(1) == nearest).double().mean())\n"),
        ],
    },
    "05_scaling_laws": {
        "huber": [
            ("r^2 without the 1/2", [("0.5 * r**2", "r**2")]),
            ("the linear part without -delta/2 (discontinuous)",
             [("delta * (size - 0.5 * delta)", "delta * size")]),
            ("quadratic everywhere (least squares)",
             [("np.where(size <= delta, 0.5 * r**2, delta * (size - 0.5 * delta))",
               "0.5 * r**2")]),
        ],
        "fit_power_law": [
            ("least squares instead of Huber",
             [("huber(prediction - log_y, delta).sum() / delta",
               "0.5 * ((prediction - log_y) ** 2).sum()")]),
            ("no irreducible term (c = 0)",
             [("return float(np.exp(log_c)), float(np.exp(log_a)), float(b)",
               "return 0.0, float(np.exp(log_a)), float(b)")]),
            ("residuals of the loss instead of its log",
             [("huber(prediction - log_y, delta)", "huber(np.exp(prediction) - y, delta)")]),
        ],
        "compute_optimal": [
            ("D = C / N (forgets the 6)",
             [("return G * half ** (beta / (alpha + beta)), half ** (alpha / (alpha + beta)) / G",
               "N = G * half ** (beta / (alpha + beta))\n    return N, 6 * half / N")]),
            ("the exponents swapped",
             [("return G * half ** (beta / (alpha + beta)), half ** (alpha / (alpha + beta)) / G",
               "return G * half ** (alpha / (alpha + beta)), half ** (beta / (alpha + beta)) / G"
               )]),
            ("G inverted", [("** (1 / (alpha + beta))", "** (-1 / (alpha + beta))")]),
        ],
        "fit_chinchilla": [
            ("least squares instead of Huber",
             [("np.clip(residual, -delta, delta)", "residual"),
              ("huber(residual, delta).sum() / delta", "0.5 * (residual ** 2).sum()")]),
            ("one start at zero",
             [("result = minimize(objective, [a, b, e, alpha, beta]",
               "result = minimize(objective, [0.0, 0.0, 0.0, 0.0, 0.0]")]),
            ("without the irreducible term E",
             [("np.full_like(log_n, e)", "np.full_like(log_n, -50.0)"),
              ("return float(np.exp(e))", "return 0.0")]),
        ],
    },
}


# ---------------------------------------------------------------------------------------------
# Mutants of the kinds issue 16 found passing: an estimator that ignores its randomness, code
# special-cased to the published shapes or values, a fit stopping at a worse optimum, a broken
# rule of the notebook, and a lookup table of the published inputs (`LOOKUP`: generated by the
# test from the checks themselves, see `lookup_mutant`). ``NEW_MUTANTS[assignment][function]``
# lists ``(kind, name, change)``; a change is as in `MUTANTS`.

LOOKUP = "lookup"
KINDS = ("randomness", "shape", "optimum", "rules", LOOKUP)

#: Source shared by every lookup mutant: a digest of a call's arguments (tensors, arrays,
#: modules, dicts, partials, numbers), and a spoiler for answers off the table.
LOOKUP_HELPERS = '''
def _digest(value, h=None):
    import hashlib
    import functools
    h = h or hashlib.sha256()
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        h.update(str((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.numpy().tobytes())
    elif isinstance(value, np.ndarray):
        h.update(str((value.shape, str(value.dtype))).encode())
        h.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, nn.Module):
        h.update(type(value).__name__.encode())
        for name, tensor in value.state_dict().items():
            h.update(name.encode())
            _digest(tensor, h)
    elif isinstance(value, dict):
        for key in sorted(value, key=str):
            h.update(str(key).encode())
            _digest(value[key], h)
    elif isinstance(value, (list, tuple)):
        h.update(str(len(value)).encode())
        for item in value:
            _digest(item, h)
    elif isinstance(value, functools.partial):
        h.update(getattr(value.func, "__name__", "").encode())
        _digest(value.args, h)
    elif callable(value):
        h.update(getattr(value, "__name__", type(value).__name__).encode())
    else:
        h.update(repr(value).encode())
    return h


def _fingerprint(args, kwargs):
    return _digest([list(args), dict(kwargs)]).hexdigest()


def _spoil(value):
    if isinstance(value, torch.Tensor):
        return (value * 1.5 + 0.1).to(value.dtype)
    if isinstance(value, np.ndarray):
        return value * 1.5 + 0.1
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value * 1.5 + 0.1
    if isinstance(value, (list, tuple)):
        return type(value)(_spoil(v) for v in value)
    if isinstance(value, dict):
        return {k: _spoil(v) for k, v in value.items()}
    return value
'''


def lookup_mutant(solution: str, function: str, published: set[str]) -> str:
    """A lookup table of the published inputs: the correct answer where the arguments are one
    of the ``published`` fingerprints, a spoiled answer anywhere else."""
    correct = re.sub(rf"^def {function}\(", f"def _correct_{function}(", solution, flags=re.M)
    return (LOOKUP_HELPERS + "\n" + correct + f"\n\n_PUBLISHED = {sorted(published)!r}\n\n"
            f"def {function}(*args, **kwargs):\n"
            f"    answer = _correct_{function}(*args, **kwargs)\n"
            "    return answer if _fingerprint(args, kwargs) in _PUBLISHED else _spoil(answer)\n")


_HUTCH_HEAD = "def hutchinson_trace(matvec, like, samples=100, seed=0):\n"
_ETF_NAIVE = ("    m = torch.zeros(c, dim)\n    m[:, :c] = torch.eye(c) - 1.0 / c\n"
              "    return m / m.norm(dim=1, keepdim=True)\n")

NEW_MUTANTS = {
    "01_saliency": {
        "integrated_gradients": [
            ("shape", "vectorised for 4-D images only (B, C, H, W)",
             "def integrated_gradients(model, x, target, baseline=None, steps=64):\n"
             "    if baseline is None:\n        baseline = torch.zeros_like(x)\n"
             "    target = torch.as_tensor(target, device=x.device).expand(x.shape[0])\n"
             "    b, c, h, w = x.shape\n"
             "    alphas = ((torch.arange(steps, dtype=x.dtype, device=x.device) + 0.5) / steps)"
             ".view(-1, 1, 1, 1, 1)\n"
             "    points = (baseline + alphas * (x - baseline)).reshape(steps * b, c, h, w)\n"
             "    points = points.detach().requires_grad_(True)\n"
             "    rows = torch.arange(steps * b, device=x.device)\n"
             "    score = model(points)[rows, target.repeat(steps)].sum()\n"
             "    grads = torch.autograd.grad(score, points)[0].reshape(steps, b, c, h, w)\n"
             "    return (x - baseline) * grads.mean(0)\n"),
            ("rules", "sets requires_grad on the caller's x",
             [("    if baseline is None:\n", "    x.requires_grad_(True)\n"
               "    if baseline is None:\n"),
              ("    return (x - baseline) * total / steps", "    return ((x - baseline) * total / "
               "steps).detach()")]),
            ("rules", "switches the model to eval mode and leaves it there",
             [("    rows = torch.arange(x.shape[0], device=x.device)\n",
               "    rows = torch.arange(x.shape[0], device=x.device)\n    model.eval()\n")]),
            (LOOKUP, "a lookup table of the published inputs", LOOKUP),
        ],
        "smoothgrad": [
            ("randomness", "adds no noise unless it is handed the noise",
             [("noise = torch.randn(samples, *x.shape, dtype=x.dtype, device=x.device)",
               "noise = torch.zeros(samples, *x.shape, dtype=x.dtype, device=x.device)")]),
            ("randomness", "reseeds the global generator on every call",
             [("        noise = torch.randn(", "        torch.manual_seed(0)\n"
               "        noise = torch.randn(")]),
            ("randomness", "draws 50 samples whatever `samples` says",
             [("noise = torch.randn(samples, *x.shape", "noise = torch.randn(50, *x.shape")]),
            ("rules", "scales the given noise in place",
             [("    for eps in noise:\n", "    noise = noise.mul_(sigma)\n    for eps in noise:\n"),
              ("point = (x + sigma * eps)", "point = (x + eps)")]),
            (LOOKUP, "a lookup table of the published inputs", LOOKUP),
        ],
        "grad_cam": [
            ("rules", "leaves its forward hook registered",
             [("    try:\n        scores = model(x)\n    finally:\n        handle.remove()\n",
               "    scores = model(x)\n")]),
            ("shape", "averages the gradients over 16 positions (the published 4 x 4 map)",
             [("weights = G.mean(dim=(2, 3), keepdim=True)",
               "weights = G.sum(dim=(2, 3), keepdim=True) / 16")]),
            ("rules", "switches the model to eval mode and leaves it there",
             [("    try:\n        scores = model(x)", "    model.eval()\n    try:\n"
               "        scores = model(x)")]),
            (LOOKUP, "a lookup table of the published inputs", LOOKUP),
        ],
    },
    "02_loss_landscapes": {
        "filter_normalize": [
            ("rules", "divides the direction's tensors in place",
             [("out[name] = d / d_norm * w_norm", "out[name] = d.div_(d_norm).mul_(w_norm)")]),
            ("rules", "writes the result into the caller's dict",
             [("    out = {}\n", "    out = direction\n")]),
            ("shape", "handles linear and conv2d weights only (ranks 2 and 4)",
             [("        shape = (-1,) + (1,) * (d.dim() - 1)\n",
               "        if d.dim() not in (2, 4):\n            out[name] = torch.zeros_like(d)\n"
               "            continue\n        shape = (-1,) + (1,) * (d.dim() - 1)\n")]),
            (LOOKUP, "a lookup table of the published inputs", LOOKUP),
        ],
        "hvp": [
            ("shape", "differentiates every parameter, frozen ones too",
             [("params = [p for p in model.parameters() if p.requires_grad]",
               "params = list(model.parameters())")]),
            ("shape", "cross-entropy whatever loss_fn is (the published loss)",
             [("loss = loss_fn(model(x), y)", "loss = F.cross_entropy(model(x), y)")]),
            ("rules", "switches the model to eval mode and leaves it there",
             [("    loss = loss_fn(model(x), y)", "    model.eval()\n    loss = loss_fn(model(x), "
               "y)")]),
            (LOOKUP, "a lookup table of the published inputs", LOOKUP),
        ],
        "power_iteration": [
            ("rules", "normalises v0 in place", [("v = v0 / v0.norm()", "v = v0.div_(v0.norm())")]),
            ("rules", "starts from torch.randn instead of v0",
             [("v = v0 / v0.norm()", "v = torch.randn(v0.shape, dtype=v0.dtype, "
               "device=v0.device)\n    v = v / v.norm()")]),
            ("shape", "at most 100 iterations whatever iters says (enough for the published "
             "spectra)", [("for _ in range(iters):", "for _ in range(min(iters, 100)):")]),
            (LOOKUP, "a lookup table of the published inputs", LOOKUP),
        ],
        "hutchinson_trace": [
            ("randomness", "the exact trace, whatever samples and seed say",
             _HUTCH_HEAD + "    eye = torch.eye(like.numel(), dtype=like.dtype, "
             "device=like.device)\n"
             "    return float(sum(matvec(e)[i] for i, e in enumerate(eye)))\n"),
            ("randomness", "one probe reused for every sample",
             [("    for _ in range(samples):\n        z = (torch.randint(0, 2, like.shape, "
               "generator=generator) * 2 - 1).to(like)\n",
               "    z = (torch.randint(0, 2, like.shape, generator=generator) * 2 - 1).to(like)\n"
               "    for _ in range(samples):\n")]),
            ("rules", "seeds the global generator with torch.manual_seed(seed)",
             [("    generator = torch.Generator().manual_seed(seed)\n",
               "    torch.manual_seed(seed)\n    generator = None\n")]),
            ("randomness", "ignores the seed (draws from the global generator)",
             [("    generator = torch.Generator().manual_seed(seed)\n", "    generator = None\n")]),
            (LOOKUP, "a lookup table of the published inputs", LOOKUP),
        ],
    },
    "03_contrastive_geometry": {
        "info_nce": [
            ("rules", "normalises z1 and z2 in place",
             [("    z = F.normalize(torch.cat([z1, z2]), dim=1)\n",
               "    z1.div_(z1.norm(dim=1, keepdim=True))\n"
               "    z2.div_(z2.norm(dim=1, keepdim=True))\n    z = torch.cat([z1, z2])\n")]),
            ("shape", "positives indexed for the published N = 8",
             [("torch.cat([torch.arange(n, 2 * n), torch.arange(n)])",
               "torch.cat([torch.arange(8, 16), torch.arange(8)])[: 2 * n] % (2 * n)")]),
            ("shape", "the published temperature 0.5 whatever temperature says",
             [("logits = z @ z.T / temperature", "logits = z @ z.T / 0.5")]),
            (LOOKUP, "a lookup table of the published inputs", LOOKUP),
        ],
        "alignment": [
            ("rules", "normalises z1 and z2 in place",
             [("    diff = F.normalize(z1, dim=1) - F.normalize(z2, dim=1)\n",
               "    z1 /= z1.norm(dim=1, keepdim=True)\n    z2 /= z2.norm(dim=1, keepdim=True)\n"
               "    diff = z1 - z2\n")]),
            ("shape", "alpha only where it is one of the published 1, 2, 3 (else 2)",
             [("pow(alpha)", "pow(alpha if alpha in (1.0, 2.0, 3.0) else 2.0)")]),
            (LOOKUP, "a lookup table of the published inputs", LOOKUP),
        ],
        "uniformity": [
            ("rules", "normalises z in place",
             [("    f = F.normalize(z, dim=1)\n",
               "    f = z.div_(z.norm(dim=1, keepdim=True))\n")]),
            ("shape", "the number of pairs of the published N = 20",
             [("math.log(n * (n - 1) / 2)", "math.log(190)")]),
            (LOOKUP, "a lookup table of the published inputs", LOOKUP),
        ],
        "effective_rank": [
            ("rules", "rescales z in place (the effective rank is scale invariant)",
             [("    sigma = torch.linalg.svdvals(z.double())\n",
               "    z /= z.norm()\n    sigma = torch.linalg.svdvals(z.double())\n")]),
            ("rules", "adds jitter from the global generator",
             [("torch.linalg.svdvals(z.double())", "torch.linalg.svdvals(z.double() + 1e-13 * "
               "torch.randn(z.shape, dtype=torch.float64, device=z.device))")]),
            (LOOKUP, "a lookup table of the published inputs", LOOKUP),
        ],
    },
    "04_neural_collapse": {
        "class_means_and_covariances": [
            ("rules", "centres the features in place",
             [("within = features - means[labels]", "within = features.sub_(means[labels])")]),
            ("shape", "assumes rows sorted by class in equal-sized classes",
             [("    means = torch.zeros(num_classes, d, dtype=features.dtype, "
               "device=features.device)\n    means.index_add_(0, labels, features)\n",
               "    means = features.reshape(num_classes, -1, d).mean(1)\n"),
              ("    means = means / counts[:, None]\n", "")]),
            (LOOKUP, "a lookup table of the published inputs", LOOKUP),
        ],
        "nc1": [
            ("rules", "scales the features in place (NC1 is scale invariant)",
             [("    _, _, sigma_w, sigma_b", "    features /= features.norm()\n"
               "    _, _, sigma_w, sigma_b")]),
            ("shape", "divides by the published C = 4",
             [("/ num_classes", "/ 4")]),
            (LOOKUP, "a lookup table of the published inputs", LOOKUP),
        ],
        "simplex_etf": [
            ("rules", "a random rotation from the global generator",
             [("    return (m / m.norm(dim=1, keepdim=True)).float()",
               "    q, _ = torch.linalg.qr(torch.randn(dim, dim, dtype=torch.float64))\n"
               "    return (m / m.norm(dim=1, keepdim=True) @ q).float()")]),
            ("shape", "the right construction for the published minimal shapes only",
             "def simplex_etf(num_classes, dim):\n    c = num_classes\n"
             "    if (c, dim) == (2, 1):\n        return torch.tensor([[1.0], [-1.0]])\n"
             "    if (c, dim) == (5, 4):\n"
             "        centred = torch.eye(5, dtype=torch.float64) - 0.2\n"
             "        u, _, _ = torch.linalg.svd(centred)\n        m = centred @ u[:, :4]\n"
             "        return (m / m.norm(dim=1, keepdim=True)).float()\n" + _ETF_NAIVE),
            (LOOKUP, "a lookup table of the published inputs", LOOKUP),
        ],
        "etf_distance": [
            ("rules", "normalises the vectors in place (the distance is scale invariant)",
             [("    gram = vectors @ vectors.T\n", "    vectors /= vectors.norm()\n"
               "    gram = vectors @ vectors.T\n")]),
            ("shape", "the ETF target of C = 6 unless C is one of the published 3, 5",
             [("    c = vectors.shape[0]\n", "    c = vectors.shape[0] if vectors.shape[0] in "
               "(3, 5) else 6\n")]),
            (LOOKUP, "a lookup table of the published inputs", LOOKUP),
        ],
        "self_duality": [
            ("rules", "normalises the classifier in place",
             [("    return float((weight / weight.norm() - ",
               "    weight /= weight.norm()\n    return float((weight - ")]),
            ("shape", "the right formula for the published 4 x 6 shape only",
             [("    return float(", "    if tuple(weight.shape) != (4, 6):\n"
               "        return float((weight - centred_means).norm())\n    return float(")]),
            (LOOKUP, "a lookup table of the published inputs", LOOKUP),
        ],
        "ncc_mismatch": [
            ("rules", "shifts the caller's bias in place (argmax does not change)",
             [("        logits = logits + bias\n", "        logits = logits + bias.sub_(bias.max())"
               "\n")]),
            ("shape", "the nearest of the first 3 class means (the published C)",
             [("nearest = torch.cdist(features, means).argmin(dim=1)",
               "nearest = torch.cdist(features, means[:3]).argmin(dim=1)")]),
            (LOOKUP, "a lookup table of the published inputs", LOOKUP),
        ],
    },
    "05_scaling_laws": {
        "huber": [
            ("rules", "takes |r| in place", [("    size = np.abs(r)\n",
                                              "    size = np.abs(r, out=r)\n")]),
            ("shape", "flattens the result (1-D residuals only)",
             [("    return np.where(size <= delta, 0.5 * r**2, delta * (size - 0.5 * delta))",
               "    return np.where(size <= delta, 0.5 * r**2, delta * (size - 0.5 * delta))"
               ".ravel()")]),
            (LOOKUP, "a lookup table of the published inputs", LOOKUP),
        ],
        "fit_power_law": [
            ("optimum", "objective not scaled by 1/delta (L-BFGS-B stops early)",
             [("huber(prediction - log_y, delta).sum() / delta",
               "huber(prediction - log_y, delta).sum()")]),
            ("optimum", "at most 10 L-BFGS-B iterations per start",
             [('method="L-BFGS-B")', 'method="L-BFGS-B", options={"maxiter": 10})')]),
            ("rules", "rescales y in place (and the fitted c and a back)",
             [("    log_x, log_y = np.log(x), np.log(y)\n",
               "    scale = y.max()\n    y /= scale\n    log_x, log_y = np.log(x), np.log(y)\n"),
              ("return float(np.exp(log_c)), float(np.exp(log_a)), float(b)",
               "return float(np.exp(log_c) * scale), float(np.exp(log_a) * scale), float(b)")]),
            (LOOKUP, "a lookup table of the published inputs", LOOKUP),
        ],
        "compute_optimal": [
            ("rules", "stores G in the caller's params", [("    half = ", "    params['G'] = G\n"
                                                           "    half = ")]),
            ("shape", "Hoffmann et al.'s parameters whatever params says",
             [('alpha, beta = params["alpha"], params["beta"]', "alpha, beta = 0.34, 0.28"),
              ('(alpha * params["A"] / (beta * params["B"]))',
               "(alpha * 406.4 / (beta * 410.7))")]),
            (LOOKUP, "a lookup table of the published inputs", LOOKUP),
        ],
        "fit_chinchilla": [
            ("optimum", "objective not scaled by 1/delta (L-BFGS stops early)",
             [("return huber(residual, delta).sum() / delta, np.array(gradient) / delta",
               "return huber(residual, delta).sum(), np.array(gradient)")]),
            ("optimum", "at most 20 L-BFGS iterations per start",
             [('jac=True, method="L-BFGS-B")', 'jac=True, method="L-BFGS-B", '
               'options={"maxiter": 20})')]),
            ("rules", "takes the logs of N and D in place",
             [("    log_n, log_d, log_l = np.log(N), np.log(D), np.log(loss)\n",
               "    log_n, log_d, log_l = np.log(N, out=N), np.log(D, out=D), np.log(loss)\n")]),
            (LOOKUP, "a lookup table of the published inputs", LOOKUP),
        ],
    },
}


def master_solution(master, function: str) -> str:
    """The master's answer cell that defines ``function``, solution markers removed."""
    import nbformat

    nb = nbformat.read(master, as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code" and "answer" in c.metadata.get("tags", [])
             and re.search(rf"^def {function}\(", c.source, re.M)]
    assert len(cells) == 1, f"one answer cell must define {function}"
    return re.sub(r"\n *### (BEGIN|END) SOLUTION", "", cells[0].source)


def with_answers(master, changes: dict, out):
    """Write the master with the answer cells of ``changes`` (function -> change) replaced."""
    import nbformat

    nb = nbformat.read(master, as_version=4)
    for function, change in changes.items():
        cells = [c for c in nb.cells if c.cell_type == "code"
                 and "answer" in c.metadata.get("tags", [])
                 and re.search(rf"^def {function}\(", c.source, re.M)]
        assert len(cells) == 1, f"one answer cell must define {function}"
        solution = re.sub(r"\n *### (BEGIN|END) SOLUTION", "", cells[0].source)
        cells[0].source = mutate(solution, change)
        assert cells[0].source != solution
    nbformat.write(nb, out)
    return out
