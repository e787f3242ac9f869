"""Figures and the compute-budget explorer of the scaling chapter."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
from deepscope import plotting, scaling, widgets


def _iso_runs(params=scaling.EPOCH):
    N, C, loss = [], [], []
    for c in (1e19, 1e20, 1e21):
        n_opt = scaling.compute_optimal(c, params).N
        sizes = n_opt * np.exp(np.linspace(-1, 1, 5))
        N += list(sizes)
        C += [c] * 5
        loss += list(scaling.isoflop_loss(sizes, c, params))
    return np.array(N), np.array(loss), np.array(C)


def test_plot_power_law_draws_data_fits_and_floors():
    x = np.logspace(1, 4, 12)
    y = scaling.power_law(x, 1.0, 10.0, 0.5)
    fit = scaling.fit_power_law(x, y)
    line = scaling.fit_power_law(x, y, irreducible=False)
    fig = plotting.plot_power_law(x, y, {"with c": fit, "line": line}, title="t")
    ax = fig.axes[0]
    assert ax.get_xscale() == ax.get_yscale() == "log" and ax.get_title() == "t"
    assert len(ax.lines) == 3  # two curves and one floor (the line has c = 0)
    np.testing.assert_allclose(ax.lines[1].get_ydata(), [fit.c, fit.c])
    assert len(plotting.plot_power_law(x, y, fit).axes[0].lines) == 2
    assert len(plotting.plot_power_law(x, y).axes[0].lines) == 0
    _, given = plt.subplots()
    assert plotting.plot_power_law(x, y, fit, ax=given) is given.figure
    with pytest.raises(TypeError, match="`fits` must be a PowerLawFit or a dict"):
        plotting.plot_power_law(x, y, [1, 2])
    with pytest.raises(ValueError, match="plot_power_law: arrays must have the same length"):
        plotting.plot_power_law(x, y[:3])


def test_plot_chinchilla_residuals_and_scaling_runs():
    N = np.array([1e8, 1e8, 1e9, 1e9])
    D = np.array([1e9, 1e10, 1e9, 1e10])
    loss = scaling.chinchilla_loss(N, D, scaling.EPOCH)
    fig = plotting.plot_chinchilla_residuals(N, D, loss, {"Epoch": scaling.EPOCH,
                                                          "Hoffmann": scaling.HOFFMANN})
    offsets = fig.axes[0].collections[0].get_offsets()
    np.testing.assert_allclose(offsets[:, 1], 0, atol=1e-12)  # Epoch's law on its own points
    assert "median |r| = 0.0000" in fig.axes[0].get_legend().get_texts()[0].get_text()
    fig = plotting.plot_scaling_runs(N, D, loss, law=scaling.EPOCH, entropy=1.8172)
    ax = fig.axes[0]
    assert len(ax.lines) == 2 * 2 + 1  # runs and law per size, the entropy floor
    np.testing.assert_allclose(ax.lines[0].get_ydata(), loss[:2])
    assert len(plotting.plot_scaling_runs(N, D, loss).axes[0].lines) == 2


def test_plot_isoflop_profiles_and_compute_optimal():
    profiles = scaling.isoflop_profiles(*_iso_runs())
    fig = plotting.plot_isoflop_profiles(profiles, law=scaling.EPOCH)
    ax = fig.axes[0]
    assert len(ax.collections) == 3 and len(ax.lines) == 3 * 3  # parabola, optimum, law
    with pytest.raises(ValueError, match="expected at least one profile"):
        plotting.plot_isoflop_profiles([])
    fig = plotting.plot_compute_optimal({"Epoch": scaling.EPOCH, "Hoffmann": scaling.HOFFMANN},
                                        points={"Chinchilla": (5.88e23, 70e9)})
    ax_n, ax_r = fig.axes
    C = ax_n.lines[0].get_xdata()
    np.testing.assert_allclose(ax_n.lines[0].get_ydata(), scaling.compute_optimal(C,
                               scaling.EPOCH).N)
    assert ax_r.lines[-1].get_ydata()[0] == pytest.approx(5.88e23 / 6 / 70e9 / 70e9)
    # an allocation rule N = k C^a (Kaplan et al. 2020) is drawn dashed, with D = C / (6N)
    fig = plotting.plot_compute_optimal({"Epoch": scaling.EPOCH}, (1e20, 1e24),
                                        power_laws={"Kaplan": (2.0, 0.73)})
    ax_n, ax_r = fig.axes
    kaplan_n, kaplan_r = ax_n.lines[1], ax_r.lines[1]
    C = kaplan_n.get_xdata()
    assert kaplan_n.get_linestyle() == "--" and kaplan_n.get_label() == "Kaplan"
    np.testing.assert_allclose(kaplan_n.get_ydata(), 2.0 * C**0.73)
    np.testing.assert_allclose(kaplan_r.get_ydata(), C / (6 * 2.0 * C**0.73) / (2.0 * C**0.73))


def test_compute_budget_explorer_follows_the_slider():
    box = widgets.compute_budget_explorer()
    labels = ["Epoch AI refit", "Hoffmann et al."]
    assert set(box.state["N_opt"]) == set(labels)
    assert box.state["C"] == pytest.approx(10**23.77)
    ratio = box.state["tokens_per_parameter"]
    assert 15 < ratio["Epoch AI refit"] < 25 and ratio["Hoffmann et al."] > 60
    before = dict(box.state["N_opt"])
    box.controls["log10_C"].value = 25.0
    assert box.state["renders"] == 2 and box.state["C"] == pytest.approx(1e25)
    for label in labels:
        opt = scaling.compute_optimal(1e25, scaling.EPOCH if label == labels[0]
                                      else scaling.HOFFMANN)
        assert box.state["N_opt"][label] == pytest.approx(opt.N)
        assert box.state["D_opt"][label] == pytest.approx(opt.D)
        assert box.state["N_opt"][label] > before[label]
        assert 6 * box.state["N_opt"][label] * box.state["D_opt"][label] == pytest.approx(1e25)
    assert box.figure is not None and "1.00e+25" in box.figure.axes[0].get_title()
    custom = widgets.compute_budget_explorer({"mine": (1.0, 10.0, 10.0, 0.5, 0.5)}, log10_C=20)
    assert custom.state["tokens_per_parameter"]["mine"] == pytest.approx(
        scaling.compute_optimal(1e20, (1.0, 10.0, 10.0, 0.5, 0.5)).tokens_per_parameter)
    with pytest.raises(TypeError, match="`params` must be a non-empty dict"):
        widgets.compute_budget_explorer({})
    with pytest.raises(ValueError, match="log10_C inside, got 30 in"):
        widgets.compute_budget_explorer(log10_C=30)
    with pytest.raises(ValueError, match=r"`params.beta` must be finite and > 0"):
        widgets.compute_budget_explorer({"bad": (1.0, 1.0, 1.0, 0.3, -0.3)})
