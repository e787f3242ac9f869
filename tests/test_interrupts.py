"""The model is left bitwise intact by every function that hooks or perturbs it, also when a real
asynchronous Ctrl-C lands at a random moment of the call (DESIGN.md section 10).

A timer thread interrupts the main thread after a random delay drawn over the function's own
duration, by ``_thread.interrupt_main()`` or by a real ``SIGINT`` (``signal.pthread_kill``),
alternately. After each call, interrupted or not, the model must be as it was: parameter and
buffer objects and their bits, the bits of ``.grad``, ``requires_grad`` flags, each
submodule's train/eval flag and its hooks. The model starts in the awkward state a researcher's
model is in: train mode with one submodule in eval mode, a frozen parameter, gradients present, a
user hook registered.

Run as a script to print the per-function counts (the numbers in the note of issue 13):
``python tests/test_interrupts.py [tries per function] [timer|events|double] [name,name,...]``.
"""

from __future__ import annotations

import _thread
import functools
import signal
import sys
import threading
import time
import traceback
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from torch import nn

MIN_INTERRUPTED = 200  # interrupted calls required across all functions (issue 13)
VERBOSE = False
DEPTH = 8  # extra Linear+Tanh pairs: many modules, as in a ResNet, so restore loops take time


def make_model() -> nn.Module:
    torch.manual_seed(0)
    deep = [m for _ in range(DEPTH) for m in (nn.Linear(12, 12), nn.Tanh())]
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Dropout(0.2),
        nn.Linear(6 * 4 * 4, 12), nn.Tanh(), *deep, nn.Linear(12, 3),
    ).double()
    x, y = make_data()
    model.train()
    F.cross_entropy(model(x), y).backward()  # gradients present, BN statistics moved
    model[7].eval()  # a mixed-mode model must come back mixed
    model[0].bias.requires_grad_(False)  # a frozen parameter must stay frozen
    model[4].register_forward_hook(lambda module, args, output: None)  # a user's hook
    return model


def make_data():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(12, 1, 8, 8, generator=g, dtype=torch.float64)
    y = torch.arange(12) % 3
    return x, y


def state(model: nn.Module) -> list:
    """Everything the library promises to leave alone, as comparable records (bits, not values)."""

    def bits(t):
        if t is None:
            return None
        try:
            return t.dtype, tuple(t.shape), t.detach().clone().reshape(-1).view(torch.uint8)
        except RuntimeError as err:  # e.g. a vmapped tensor left behind in the module
            return ("unreadable", type(t).__name__, str(err)[:40])

    records = []
    for name, module in model.named_modules():
        records.append(("mode", name, module.training))
        for key, value in vars(module).items():
            if "hooks" in key and isinstance(value, dict):
                records.append(("hooks", name, key, tuple(value)))
        for pname, p in module._parameters.items():
            grad = None if p is None else p.grad
            records.append(("param", name, pname, id(p), bits(p), p.requires_grad, bits(grad)))
        for bname, b in module._buffers.items():
            records.append(("buffer", name, bname, id(b), bits(b)))
    records.append(("grad_mode", torch.is_grad_enabled()))
    return records


def same(a: list, b: list) -> bool:
    if len(a) != len(b):
        return False
    for ra, rb in zip(a, b):
        for fa, fb in zip(ra, rb):
            if isinstance(fa, tuple) and len(fa) == 3 and isinstance(fa[2], torch.Tensor):
                if fb is None or fa[:2] != fb[:2] or not torch.equal(fa[2], fb[2]):
                    return False
            elif fa != fb:
                return False
    return True


# --------------------------------------------------------------------------------------------
# The guards themselves, with the interrupt placed exactly (deterministic)


class Tripwire(nn.Linear):
    """A layer that sends a real SIGINT to the main thread the first time its ``training`` flag
    is set to ``when`` (the moment a guard switches or restores modes)."""

    def __init__(self, when: bool):
        super().__init__(2, 2)
        self.when, self.armed = when, False

    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        if name == "training" and value == self.when and self.__dict__.get("armed"):
            self.__dict__["armed"] = False
            _thread.interrupt_main()


def _tripwire_model(when):
    model = nn.Sequential(nn.Linear(2, 2), Tripwire(when), nn.Linear(2, 2), nn.Dropout())
    model[3].eval()  # mixed modes
    model[1].armed = True
    return model


def test_an_interrupt_during_restoration_is_deferred_until_it_is_complete():
    from deepscope._guards import eval_mode

    model = _tripwire_model(when=True)  # fires while __exit__ puts train mode back
    before = state(model)
    with pytest.raises(KeyboardInterrupt):
        with eval_mode(model):
            pass
    assert same(state(model), before)  # every module restored, then the interrupt raised
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_interrupt_while_entering_undoes_the_change_and_raises():
    from deepscope._guards import eval_mode

    model = _tripwire_model(when=False)  # fires while __enter__ switches to eval mode
    before = state(model)
    ran = []
    with pytest.raises(KeyboardInterrupt):
        with eval_mode(model):
            ran.append(True)
    assert not ran and same(state(model), before)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_hook_registered_but_not_recorded_is_removed():
    from deepscope._guards import removing_hooks

    model = nn.Sequential(nn.Linear(2, 2))
    keep = model[0].register_forward_hook(lambda *a: None)  # the user's, must stay
    with removing_hooks(model):
        model[0].register_forward_hook(lambda *a: None)  # never appended to the handles
    assert list(model[0]._forward_hooks) == [keep.id]


def test_guards_leave_sigint_alone_when_python_does_not_handle_it():
    from deepscope._guards import eval_mode

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with eval_mode(nn.Linear(2, 2)):
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_guards_work_off_the_main_thread():
    from deepscope._guards import eval_mode

    model, errors = _tripwire_model(when=True), []
    model[1].armed = False

    def work():
        try:
            with eval_mode(model):
                assert not model.training
        except Exception as err:  # noqa: BLE001
            errors.append(err)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert not errors and model.training and not model[3].training


def test_sam_step_interrupted_leaves_the_weights_before_or_after_the_step():
    """SAM perturbs the weights between its two passes: an interrupt anywhere must leave them at
    w (before the step) or at the completed step, never at w + e."""
    from deepscope import landscape

    x, y = make_data()
    x = x.flatten(1)
    gen = torch.Generator().manual_seed(0)
    outcomes = Counter()
    def make(i):
        torch.manual_seed(i)
        model = nn.Sequential(nn.Linear(64, 8), nn.Tanh(), nn.Linear(8, 3)).double()
        return model, landscape.SAM(model.parameters(), torch.optim.SGD, rho=0.5, lr=0.1)

    for i in range(40):
        model, opt = make(i)
        ref_model, ref_opt = make(i)  # the same step, uninterrupted
        ref_opt.step(functools.partial(_closure_for, ref_model, ref_opt, x, y))
        probe_model, probe_opt = make(i)
        events = count_events(functools.partial(
            probe_opt.step, functools.partial(_closure_for, probe_model, probe_opt, x, y)))
        before = [p.detach().clone() for p in model.parameters()]
        after = [p.detach().clone() for p in ref_model.parameters()]

        def call(opt=opt, model=model):
            opt.step(functools.partial(_closure_for, model, opt, x, y))

        k = 1 + int(float(torch.rand((), generator=gen)) * events)
        outcomes[attempt_at_event(call, (k,), "signal" if i % 2 else "interrupt_main")] += 1
        now = [p.detach() for p in model.parameters()]
        assert all(torch.equal(a, b) for a, b in zip(now, before)) or \
            all(torch.equal(a, b) for a, b in zip(now, after)), f"try {i}: weights left at w + e"
    assert outcomes["interrupted"] >= 20


def _closure_for(model, opt, x, y):
    opt.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    return loss


# --------------------------------------------------------------------------------------------
# The guarded functions, each as call(model, x, y)


def _cases():
    from deepscope import collapse, contrastive, landscape, saliency, train

    ce = F.cross_entropy

    def direction(model, seed):
        return landscape.random_direction(model, seed=seed)

    def bezier(model, x, y):
        other = {n: t + 0.01 for n, t in landscape.trainable_parameters(model).items()}
        return landscape.fit_bezier(model, other, ce, (x, y), steps=3, batch_size=None,
                                    progress=False)

    def curve(model, x, y):
        params = landscape.trainable_parameters(model)
        mid = {n: t * 1.01 for n, t in params.items()}
        end = {n: t * 0.99 for n, t in params.items()}
        return landscape.curve_losses(model, landscape.BezierCurve(params, mid, end, []), ce,
                                      (x, y), ts=5)

    def tracker(model, x, y):
        return collapse.CollapseTracker(x, y, keep_per_class=2).measure(1, model)

    def features(model, x, y):
        with collapse.record_features(model, None) as records:
            model[8:](x.flatten(1).repeat(1, 2)[:, :96])  # the head: no batch-norm stats move
        return records

    return {
        "gradient": lambda m, x, y: saliency.gradient(m, x, y),
        "input_x_gradient": lambda m, x, y: saliency.input_x_gradient(m, x, y),
        "smoothgrad": lambda m, x, y: saliency.smoothgrad(m, x, y, samples=8, seed=0),
        "integrated_gradients": lambda m, x, y: saliency.integrated_gradients(m, x, y, steps=8),
        "expected_gradients": lambda m, x, y: saliency.expected_gradients(m, x, y, x, samples=8,
                                                                          seed=0),
        "deeplift": lambda m, x, y: saliency.deeplift(m, x, y, return_delta=True),
        "occlusion": lambda m, x, y: saliency.occlusion(m, x, y, window=(1, 4, 4), stride=4),
        "grad_cam": lambda m, x, y: saliency.grad_cam(m, x, y, "4"),
        "grad_cam_plus_plus": lambda m, x, y: saliency.grad_cam_plus_plus(m, x, y, "4"),
        "layer_gradients": lambda m, x, y: saliency.layer_gradients(m, x, y, "4"),
        "model_randomization": lambda m, x, y: saliency.model_randomization(
            m, x, y, saliency.gradient, layers=["0", "10"], progress=False),
        "pgd_attack": lambda m, x, y: saliency.pgd_attack(m, x, y, 0.1, steps=3, seed=0),
        "slice_1d": lambda m, x, y: landscape.slice_1d(m, direction(m, 0), ce, (x, y),
                                                       torch.linspace(-1, 1, 5), progress=False),
        "slice_2d": lambda m, x, y: landscape.slice_2d(m, direction(m, 0), direction(m, 1), ce,
                                                       (x, y), torch.linspace(-1, 1, 3),
                                                       torch.linspace(-1, 1, 3), progress=False),
        "interpolate": lambda m, x, y: landscape.interpolate(
            m, {n: t * 0.5 for n, t in landscape.trainable_parameters(m).items()}, ce, (x, y),
            alphas=5, progress=False),
        "loss_gradient": lambda m, x, y: landscape.loss_gradient(m, ce, (x, y)),
        "hvp": lambda m, x, y: landscape.hvp(m, ce, [(x[:6], y[:6]), (x[6:], y[6:])],
                                             direction(m, 2)),
        "top_eigenvalues": lambda m, x, y: landscape.top_eigenvalues(m, ce, (x, y), k=1,
                                                                     max_iter=4, seed=0),
        "hessian_trace": lambda m, x, y: landscape.hessian_trace(m, ce, (x, y), samples=4,
                                                                 seed=0),
        "spectral_density": lambda m, x, y: landscape.spectral_density(m, ce, (x, y), iters=4,
                                                                       runs=1),
        "fit_bezier": bezier,
        "curve_losses": curve,
        "extract_features": lambda m, x, y: collapse.extract_features(m, x),
        "layer_features": lambda m, x, y: collapse.layer_features(m, x, ["2", "5"]),
        "nc1_by_layer": lambda m, x, y: collapse.nc1_by_layer(m, x, y, ["5", None]),
        "record_features": features,
        "CollapseTracker": tracker,
        "embed": lambda m, x, y: contrastive.embed(m, x),
        "linear_probe": lambda m, x, y: contrastive.linear_probe(m, (x, y), (x, y), max_iter=5),
        "knn_accuracy": lambda m, x, y: contrastive.knn_accuracy(m, (x, y), (x, y), k=3),
        "evaluate": lambda m, x, y: train.evaluate(m, (x, y)),
    }


# --------------------------------------------------------------------------------------------
# One call with an interrupt at a random moment


def _noop():
    return None


def attempt(call, delay: float, how: str) -> str:
    """Run ``call()`` while a timer interrupts the main thread after ``delay`` seconds (unless
    the call has finished). Return "completed", "interrupted" (the KeyboardInterrupt was raised
    inside the call) or "after" (it landed after the call returned)."""
    lock, done = threading.Lock(), [False]
    main = threading.main_thread().ident

    def shoot():
        time.sleep(delay)
        with lock:
            if done[0]:
                return
            if how == "signal":
                signal.pthread_kill(main, signal.SIGINT)
            else:
                _thread.interrupt_main()

    timer = threading.Thread(target=shoot, daemon=True)
    outcome = "completed"
    try:
        try:
            timer.start()
            call()
        finally:
            with lock:
                done[0] = True
        for _ in range(3):  # let a signal sent just before `done` be handled here
            time.sleep(0.002)
            _noop()
    except KeyboardInterrupt as err:
        frames = traceback.extract_tb(err.__traceback__)
        outcome = "interrupted" if len(frames) > 1 and frames[1].name == call.__name__ else \
            "after"
    timer.join()
    return outcome


def attempt_at_event(call, ks: tuple[int, ...], how: str) -> str:
    """Like `attempt`, but send an interrupt at each k-th profiler event (a Python or C function
    call or return) of the call, so that every short window (a restore loop, the moment between
    registering a hook and recording its handle) is as likely to be hit as a long computation.
    With two ks, the second interrupt lands while the first one unwinds (and restores). The
    interrupts still travel the real way: a signal, handled at the interpreter's next check."""
    main = threading.main_thread().ident
    count = [0]

    def profile(frame, event, arg):
        count[0] += 1
        if count[0] in ks:
            if count[0] == ks[-1]:
                sys.setprofile(None)
            if how == "signal":
                signal.pthread_kill(main, signal.SIGINT)
            else:
                _thread.interrupt_main()

    outcome = "completed"
    try:
        try:
            sys.setprofile(profile)
            call()
        finally:
            sys.setprofile(None)
        for _ in range(3):
            time.sleep(0.002)
            _noop()
    except KeyboardInterrupt as err:
        frames = traceback.extract_tb(err.__traceback__)
        outcome = "interrupted" if len(frames) > 1 and frames[1].name == call.__name__ else \
            "after"
    for _ in range(3):  # a second interrupt not yet delivered: absorb it here
        try:
            time.sleep(0.002)
            _noop()
        except KeyboardInterrupt:
            pass
    return outcome


def count_events(call) -> int:
    count = [0]

    def profile(frame, event, arg):
        count[0] += 1

    try:
        sys.setprofile(profile)
        call()
    finally:
        sys.setprofile(None)
    return count[0]


def run(tries: int, seed: int = 0, names=None, mode: str = "timer") -> dict:
    """Return {name: (attempts, interrupted, changed, errors, changed without interrupt)}."""
    x, y = make_data()
    gen = torch.Generator().manual_seed(seed)
    results = {}
    for name, fn in _cases().items():
        if names is not None and name not in names:
            continue
        model = make_model()
        before = state(model)

        def call(fn=fn, model=model):
            fn(model, x, y)

        call.__name__ = "call"
        start = time.perf_counter()
        try:
            call()
            call()
            events = count_events(call) if mode != "timer" else 0
        except Exception as err:  # noqa: BLE001 - broken by an earlier function's interrupts
            results[name] = (0, 0, 0, 1, False)
            print(f"{name}: an uninterrupted call failed: {type(err).__name__}: {err}"[:200])
            continue
        duration = (time.perf_counter() - start) / 2
        uninterrupted_change = not same(state(model), before)
        if uninterrupted_change:  # broken without any interrupt: count only interrupted calls
            model = make_model()
            before = state(model)

            def call(fn=fn, model=model):  # noqa: F811
                fn(model, x, y)

            call.__name__ = "call"
        interrupted = changed = errors = 0
        for i in range(tries):
            # a third anywhere, a third near the start (the guards' set-up), a third near the
            # end (their restoration), where a half-done guard would show
            u = float(torch.rand((), generator=gen))
            delay = duration * (1.1 * u if i % 3 == 0 else 0.15 * u if i % 3 == 1 else
                                0.8 + 0.3 * u)
            how = "signal" if i % 2 else "interrupt_main"
            try:
                if mode in ("events", "double"):
                    k = 1 + int(float(torch.rand((), generator=gen)) * events)
                    ks = (k, k + 1 + int(float(torch.rand((), generator=gen)) * 400)) \
                        if mode == "double" else (k,)
                    outcome = attempt_at_event(call, ks, how)
                else:
                    outcome = attempt(call, delay, how)
            except Exception:  # noqa: BLE001 - a call broken by an earlier interrupt
                errors += 1
                outcome = "error"
            interrupted += outcome == "interrupted"
            after = state(model)
            if not same(after, before):
                changed += 1
                if VERBOSE:
                    diff = next(rb for ra, rb in zip(before, after) if not same([ra], [rb]))
                    print(f"  {name} ({outcome}, {how}): {str(diff)[:150]}")
                model = make_model()  # start the next try from a clean model
                before = state(model)

                def call(fn=fn, model=model):  # noqa: F811 - rebind to the fresh model
                    fn(model, x, y)

                call.__name__ = "call"
        results[name] = (tries, interrupted, changed, errors, uninterrupted_change)
    return results


def _require_sigint():
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals reach the main thread only")
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT is not Python's default handler in this process")


def _check(results):
    changed = {name: r[2] for name, r in results.items() if r[2]}
    errors = {name: r[3] for name, r in results.items() if r[3]}
    broken = [name for name, r in results.items() if r[4]]
    assert not broken, f"models changed by uninterrupted calls: {broken}"
    assert not changed, f"models changed after interrupted calls: {changed}"
    assert not errors, f"calls failed after an earlier interrupt: {errors}"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.slow
def test_timer_interrupts_leave_every_model_bitwise_intact():
    """A timer thread interrupts each guarded function at random moments until at least
    `MIN_INTERRUPTED` calls were interrupted (issue 13's bar)."""
    _require_sigint()
    total, rounds = 0, 0
    while total < MIN_INTERRUPTED and rounds < 8:
        results = run(tries=4, seed=rounds)
        _check(results)
        total += sum(r[1] for r in results.values())
        rounds += 1
    assert total >= MIN_INTERRUPTED, f"only {total} calls were interrupted in {rounds} rounds"


@pytest.mark.slow
def test_interrupts_at_random_calls_and_second_interrupts_leave_models_intact():
    """Interrupts placed at a random function call of each guarded function (so that short
    windows are hit as often as long computations), and pairs of interrupts whose second one
    lands while the first unwinds through the guards."""
    _require_sigint()
    single = run(tries=4, seed=100, mode="events")
    _check(single)
    assert sum(r[1] for r in single.values()) >= 3 * len(single)
    _check(run(tries=2, seed=200, mode="double"))


if __name__ == "__main__":
    tries = int(sys.argv[1]) if len(sys.argv) > 1 else 12
    mode = sys.argv[2] if len(sys.argv) > 2 else "timer"
    VERBOSE = True
    import deepscope

    print("deepscope from", deepscope.__file__, "mode", mode)
    out = run(tries, mode=mode, names=sys.argv[3].split(",") if len(sys.argv) > 3 else None)
    width = max(map(len, out))
    for name, (n, hit, changed, errors, broken) in out.items():
        print(f"{name:<{width}}  tries {n:3d}  interrupted {hit:3d}  changed {changed:3d}  "
              f"errors {errors:3d}" + ("  (changed also without interrupt)" if broken else ""))
    print("total: tries", sum(r[0] for r in out.values()), "interrupted",
          sum(r[1] for r in out.values()), "changed", sum(r[2] for r in out.values()),
          "errors", sum(r[3] for r in out.values()))
