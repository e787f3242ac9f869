"""Correct answers written differently from the masters: each must score full marks.

``VARIANTS[assignment_id]`` lists ``(kind, name, changes)``: ``changes`` maps each function to
its new answer cell (a full source, or ``(old, new)`` replacements of the master's solution, as
in `mutants.mutate`); the questions of those functions must get every point. The kinds are the
ways a right answer used to lose points or might: loops instead of vectorised code and back,
float64 accumulation, ``torch.func``, IPython magics and PEP 8 continuation lines, helpers with
extra optional arguments. (A solution written in a new, untagged cell below the stub is tested
for every assignment in `test_variants`.)
"""

KINDS = ("loops", "vectorised", "float64", "torch.func", "magics", "helper arguments")

VARIANTS = {
    "01_saliency": [
        ("vectorised", "integrated gradients: every step in one batch, any input rank", {
            "integrated_gradients": """\
def integrated_gradients(model, x, target, baseline=None, steps=64):
    if baseline is None:
        baseline = torch.zeros_like(x)
    target = torch.as_tensor(target, device=x.device).expand(x.shape[0])
    alphas = (torch.arange(steps, dtype=x.dtype, device=x.device) + 0.5) / steps
    shape = (steps,) + (1,) * x.dim()
    points = (baseline + alphas.view(shape) * (x - baseline)).reshape(-1, *x.shape[1:])
    points = points.detach().requires_grad_(True)
    scores = model(points).gather(1, target.repeat(steps)[:, None]).sum()
    (grads,) = torch.autograd.grad(scores, points)
    return (x - baseline) * grads.reshape(steps, *x.shape).mean(0)
"""}),
        ("magics", "integrated gradients with magics and a PEP 8 line starting with %", {
            "integrated_gradients": [
                ("def integrated_gradients(", "%load_ext autoreload\n%autoreload 2\n"
                 "!echo grading\ndef integrated_gradients("),
                ("    alphas = (torch.arange(steps, dtype=x.dtype, device=x.device) + 0.5) "
                 "/ steps\n",
                 "    %time None\n"
                 "    alphas = ((torch.arange(steps, dtype=x.dtype, device=x.device) + 0.5)\n"
                 "              % steps) / steps\n"),
            ]}),
        ("float64", "integrated gradients accumulated in float64", {
            "integrated_gradients": [
                ("    total = torch.zeros_like(x)\n",
                 "    total = torch.zeros_like(x, dtype=torch.float64)\n"),
                ("    return (x - baseline) * total / steps",
                 "    return ((x - baseline).double() * total / steps).to(x.dtype)"),
            ]}),
        ("torch.func", "SmoothGrad with torch.func.vmap(grad(...)) over the noise", {
            "smoothgrad": """\
def smoothgrad(model, x, target, sigma=0.15, samples=50, noise=None):
    from torch.func import functional_call, grad, vmap

    if noise is None:
        noise = torch.randn(samples, *x.shape, dtype=x.dtype, device=x.device)
    target = torch.as_tensor(target, device=x.device).expand(x.shape[0])
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def score(point):
        out = functional_call(model, (params, buffers), (point,))
        return out.gather(1, target[:, None]).sum()

    return vmap(grad(score))(x[None] + sigma * noise).mean(0)
"""}),
        ("loops", "Grad-CAM one image at a time, the hook removed each time", {
            "grad_cam": """\
def grad_cam(model, x, target, layer):
    target = torch.as_tensor(target, device=x.device).expand(x.shape[0])
    maps = []
    for i in range(x.shape[0]):
        saved = {}
        handle = layer.register_forward_hook(lambda m, inputs, out: saved.update(A=out))
        try:
            score = model(x[i:i + 1])[0, target[i]]
        finally:
            handle.remove()
        (g,) = torch.autograd.grad(score, saved["A"])
        maps.append(torch.relu((g.mean(dim=(2, 3), keepdim=True) * saved["A"]).sum(1))[0])
    return torch.stack(maps).detach()
"""}),
    ],
    "02_loss_landscapes": [
        ("loops", "filter normalisation filter by filter", {
            "filter_normalize": """\
def filter_normalize(direction, weights):
    out = {}
    for name, d in direction.items():
        w = weights[name]
        if d.dim() <= 1:
            out[name] = torch.zeros_like(d)
            continue
        rows = [d[i] / d[i].norm() * w[i].norm() for i in range(d.shape[0])]
        out[name] = torch.stack(rows)
    return out
"""}),
        ("torch.func", "Hessian-vector product as the vjp of grad(loss), with torch.func", {
            "hvp": """\
def hvp(model, loss_fn, x, y, v):
    from torch.func import functional_call, grad, vjp

    named = list(model.named_parameters())
    params = {n: p.detach() for n, p in named if p.requires_grad}
    frozen = {n: p.detach() for n, p in named if not p.requires_grad}
    buffers = dict(model.named_buffers())

    def loss(p):
        return loss_fn(functional_call(model, ({**p, **frozen}, buffers), (x,)), y)

    tangent, offset = {}, 0
    for n, p in params.items():
        tangent[n] = v[offset:offset + p.numel()].view_as(p)
        offset += p.numel()
    _, pullback = vjp(grad(loss), params)  # H is symmetric: v^T H = (H v)^T
    (hv,) = pullback(tangent)
    return torch.cat([hv[n].reshape(-1) for n in params])
"""}),
        ("float64", "power iteration with a while loop and a float64 Rayleigh quotient", {
            "power_iteration": """\
def power_iteration(matvec, v0, iters=100):
    v = v0 / torch.linalg.vector_norm(v0)
    k = 0
    while k < iters:
        w = matvec(v)
        v = w / torch.linalg.vector_norm(w)
        k += 1
    return float(v.double() @ matvec(v).double()), v
"""}),
        ("vectorised", "Hutchinson with every probe drawn at once", {
            "hutchinson_trace": """\
def hutchinson_trace(matvec, like, samples=100, seed=0):
    generator = torch.Generator().manual_seed(seed)
    z = (torch.randint(0, 2, (samples, *like.shape), generator=generator) * 2 - 1).to(like)
    return float(torch.stack([zi @ matvec(zi) for zi in z]).mean())
"""}),
    ],
    "03_contrastive_geometry": [
        ("vectorised", "InfoNCE as logsumexp minus the positive logit", {
            "info_nce": """\
def info_nce(z1, z2, temperature=0.5):
    n = z1.shape[0]
    z = torch.cat([F.normalize(z1, dim=1), F.normalize(z2, dim=1)])
    sim = z @ z.T / temperature
    idx = torch.arange(2 * n, device=z.device)
    sim = sim.masked_fill(idx[:, None] == idx[None, :], float("-inf"))
    positives = (idx + n) % (2 * n)
    return (torch.logsumexp(sim, dim=1) - sim[idx, positives]).mean()
"""}),
        ("float64", "alignment accumulated in float64", {
            "alignment": """\
def alignment(z1, z2, alpha=2.0):
    d = F.normalize(z1.double(), dim=1) - F.normalize(z2.double(), dim=1)
    return d.norm(dim=1).pow(alpha).mean().to(z1.dtype)
"""}),
        ("vectorised", "uniformity with torch.pdist", {
            "uniformity": """\
def uniformity(z, t=2.0):
    f = F.normalize(z, dim=1)
    squared = torch.pdist(f).pow(2)
    return torch.logsumexp(-t * squared, dim=0) - math.log(squared.numel())
"""}),
        ("loops", "effective rank with an explicit sum over the singular values", {
            "effective_rank": """\
def effective_rank(z):
    sigma = torch.linalg.svdvals(z.to(torch.float64))
    total = float(sigma.sum())
    entropy = 0.0
    for s in sigma.tolist():
        p = s / total
        if p > 0:
            entropy -= p * math.log(p)
    return math.exp(entropy)
"""}),
    ],
    "04_neural_collapse": [
        ("helper arguments", "a helper with an extra optional argument, used by nc1", {
            "class_means_and_covariances": """\
def class_means_and_covariances(features, labels, num_classes, unbiased=False):
    n, d = features.shape
    means = torch.stack([features[labels == c].mean(0) for c in range(num_classes)])
    global_mean = features.mean(0)
    within = features - means[labels]
    centred = means - global_mean
    denominator = n - num_classes if unbiased else n
    return means, global_mean, within.T @ within / denominator, centred.T @ centred / num_classes
""",
            "nc1": """\
def nc1(features, labels, num_classes):
    _, _, sigma_w, sigma_b = class_means_and_covariances(features, labels, num_classes,
                                                         unbiased=False)
    return float(torch.trace(sigma_w @ torch.linalg.pinv(sigma_b))) / num_classes
"""}),
        ("float64", "the simplex ETF from a QR basis, in float64", {
            "simplex_etf": """\
def simplex_etf(num_classes, dim):
    c = num_classes
    centred = torch.eye(c, dtype=torch.float64) - 1.0 / c
    q, _ = torch.linalg.qr(centred[:, : c - 1])
    m = torch.zeros(c, dim, dtype=torch.float64)
    m[:, : c - 1] = centred @ q
    return (m / m.norm(dim=1, keepdim=True)).float()
"""}),
        ("float64", "NC2-NC4 in float64 with matrix norms and broadcasting", {
            "etf_distance": """\
def etf_distance(vectors):
    v = vectors.double()
    c = v.shape[0]
    gram = v @ v.T
    target = (torch.eye(c, dtype=v.dtype, device=v.device) - 1.0 / c) / math.sqrt(c - 1)
    return float(torch.linalg.matrix_norm(gram / torch.linalg.matrix_norm(gram) - target))
""",
            "self_duality": """\
def self_duality(weight, centred_means):
    w = weight / torch.linalg.matrix_norm(weight)
    m = centred_means / torch.linalg.matrix_norm(centred_means)
    return float(torch.linalg.matrix_norm(w - m))
""",
            "ncc_mismatch": """\
def ncc_mismatch(features, means, weight, bias=None):
    scores = features @ weight.T + (0 if bias is None else bias)
    distances = ((features[:, None, :] - means[None, :, :]) ** 2).sum(-1)
    return float((scores.argmax(1) != distances.argmin(1)).double().mean())
"""}),
    ],
    "05_scaling_laws": [
        ("helper arguments", "a huber with an extra optional argument, used by the fits", {
            "huber": """\
def huber(r, delta=1e-3, scale=1.0):
    r = np.asarray(r, dtype=np.float64)
    out = np.empty_like(r)
    flat, result = r.reshape(-1), out.reshape(-1)
    for i, v in enumerate(flat):
        result[i] = 0.5 * v * v if abs(v) <= delta else delta * (abs(v) - 0.5 * delta)
    return scale * out
""",
            "fit_power_law": [("huber(prediction - log_y, delta)",
                               "huber(prediction - log_y, delta, scale=1.0)")],
        }),
        ("float64", "compute-optimal allocation in log space", {
            "compute_optimal": """\
def compute_optimal(C, params):
    a, b = params["alpha"], params["beta"]
    log_g = (math.log(a * params["A"]) - math.log(b * params["B"])) / (a + b)
    log_half = np.log(np.asarray(C, dtype=np.float64) / 6)
    return np.exp(log_g + b / (a + b) * log_half), np.exp(a / (a + b) * log_half - log_g)
"""}),
        ("loops", "the Chinchilla fit without an analytic gradient", {
            "fit_chinchilla": [
                ("        slope = np.clip(residual, -delta, delta)  # d Huber / d residual\n"
                 "        weights = np.exp(terms - prediction) * slope\n"
                 "        gradient = [weights[0].sum(), weights[1].sum(), weights[2].sum(),\n"
                 "                    -(weights[0] * log_n).sum(), -(weights[1] * log_d).sum()]\n"
                 "        return huber(residual, delta).sum() / delta, "
                 "np.array(gradient) / delta\n",
                 "        return huber(residual, delta).sum() / delta\n"),
                ('jac=True, method="L-BFGS-B"', 'method="L-BFGS-B"'),
            ]}),
    ],
}
