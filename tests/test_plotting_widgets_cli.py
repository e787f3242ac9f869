import ipywidgets as W
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from deepscope import cli, data, models, plotting, widgets
from deepscope.train import History


def test_show_images_grid_and_errors():
    x, y = data.digits("test")
    fig = plotting.show_images(x[:10], titles=y[:10].tolist(), ncols=4)
    assert len(fig.axes) == 12 and fig.axes[0].get_title() == str(int(y[0]))
    with pytest.raises(ValueError, match="got 2 titles for 3 images"):
        plotting.show_images(x[:3], titles=[1, 2])
    with pytest.raises(ValueError, match="at least one image"):
        plotting.show_images([])
    assert plotting.to_numpy_image(torch.zeros(3, 4, 5)).shape == (4, 5, 3)
    with pytest.raises(ValueError, match="expected an image of shape"):
        plotting.to_numpy_image(np.zeros((2, 2, 2, 2)))


def test_plot_history_and_style():
    h = History(epoch=[1, 2], train_loss=[1.0, 0.5], train_acc=[0.5, 0.8],
                test_loss=[1.1, 0.7], test_acc=[0.4, 0.7])
    fig = plotting.plot_history(h)
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 2
    _, ax = plt.subplots()
    assert plotting.plot_history(h, ax=ax) is ax.figure
    plotting.use_book_style()
    assert plt.rcParams["axes.spines.top"] is False


def test_explorer_redraws_on_every_control_change():
    calls = []

    def render(values):
        calls.append(values)
        fig, ax = plt.subplots()
        ax.plot([0, values["a"]])
        return fig, {"doubled": 2 * values["a"]}

    box = widgets.explorer({"a": W.IntSlider(value=1, min=0, max=5)}, render, title="t")
    assert box.state["doubled"] == 2 and box.state["renders"] == 1
    box.controls["a"].value = 4
    assert box.state == {"doubled": 8, "values": {"a": 4}, "renders": 2}
    assert box.figure.axes[0].lines[0].get_ydata()[-1] == 4
    assert isinstance(box.output, W.Output) and isinstance(box.children[0], W.HTML)


def test_digits_explorer_state_follows_slider():
    torch.manual_seed(0)
    net = models.mlp(64, 16, 10)
    x, y = data.digits("test")
    was_training = net.training
    box = widgets.digits_explorer(net, x[:20], y[:20])
    assert net.training == was_training
    assert box.state["index"] == 0 and len(box.state["probabilities"]) == 10
    box.controls["index"].value = 7
    assert box.state["index"] == 7 and box.state["label"] == int(y[7])
    assert box.state["prediction"] == int(np.argmax(box.state["probabilities"]))
    assert pytest.approx(sum(box.state["probabilities"]), abs=1e-5) == 1.0
    with pytest.raises(ValueError, match=r"`x` must have 4 dimensions \(N, 1, H, W\)"):
        widgets.digits_explorer(net, x[:5].flatten(1), y[:5])
    with pytest.raises(ValueError, match=r"`labels` must have shape \(5,\)"):
        widgets.digits_explorer(net, x[:5], y[:4])


def test_cli_info(capsys, monkeypatch):
    monkeypatch.setenv("DEEPSCOPE_DEVICE", "cpu")
    rows = cli.info()
    assert rows["deepscope"] == "0.1.0" and rows["device"] == "cpu"
    assert rows["torch"] == torch.__version__
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "oracle extra" in out and "torch threads" in out
    monkeypatch.setattr(cli, "ORACLE_MODULES", ("surely_not_installed_xyz",))
    assert cli.info()["oracle extra"] == "missing (surely_not_installed_xyz)"
    with pytest.raises(SystemExit):
        cli.main([])
