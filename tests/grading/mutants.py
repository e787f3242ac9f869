"""Deliberately wrong answers: each must lose points on its question (the grader can fail).

``MUTANTS[assignment_id][function]`` lists ``(name, change)`` pairs. A change is either the
full source of a wrong answer cell, or a list of ``(old, new)`` text replacements applied to the
master's own solution (markers removed), so that such mutants follow the master when it changes.
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
