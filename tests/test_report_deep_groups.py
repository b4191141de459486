"""The report's side-by-side deep figure keeps networks apart: the MLP on digits and the ResNet stand-in on patches
write runs with the same experiment names (``stepwise_deep/<loss>``), and one figure of all four would put two
panels titled ``barlow_twins`` next to each other."""

import html
import json

import numpy as np

from stepwise.plots.report import _network_label, build_report


def _deep_run(folder, loss, config, top):
    folder.mkdir(parents=True)
    step = np.arange(0, 50, 10)
    eig = np.outer(np.linspace(1e-6, top, step.size), [1.0, 0.1])
    np.savez(folder / "spectrum.npz", step=step, eigenvalues=eig, eval_loss=np.linspace(1.0, 0.1, step.size),
             well_separated=np.array([True, False]))
    (folder / "results.json").write_text(json.dumps(
        {"experiment": f"stepwise_deep/{loss}", "passed": True, "config": config,
         "checks": [{"name": "steps", "kind": "theory", "passed": True, "value": 1, "threshold": 1}]}))


def test_side_by_side_is_one_figure_per_network(tmp_path):
    mlp = {"model": "mlp", "hidden": [256, 256], "dataset": "digits", "width": 0.25, "resnet_blocks": 2}
    resnet = {"model": "resnet18", "dataset": "patches", "width": 0.125, "resnet_blocks": 1}
    for loss in ("barlow_twins", "vicreg"):
        _deep_run(tmp_path / "runs" / f"mlp_{loss}", loss, mlp, 1.0)
        _deep_run(tmp_path / "runs" / f"resnet_{loss}", loss, resnet, 2.0)
    report = build_report(tmp_path / "runs", tmp_path / "out" / "index.html")
    text = report.path.read_text()
    assert report.runs == 4
    assert _network_label(mlp) == "mlp 256-256 on digits"
    assert _network_label(resnet) == "resnet10 (width 0.125) on patches"
    assert text.count("Deep networks, losses side by side") == 2
    assert "side by side: mlp 256-256 on digits" in text and "side by side: resnet10 (width 0.125) on patches" in text
    figures = sorted(p.name for p in (tmp_path / "out").glob("stepwise_deep_side_by_side_*.png"))
    assert figures == ["stepwise_deep_side_by_side_0.png", "stepwise_deep_side_by_side_1.png"]


def test_a_lone_network_gets_no_side_by_side(tmp_path):
    _deep_run(tmp_path / "runs" / "one", "vicreg", {"model": "mlp", "dataset": "digits"}, 1.0)
    report = build_report(tmp_path / "runs", tmp_path / "out" / "index.html")
    assert "losses side by side" not in report.path.read_text()
    assert not list((tmp_path / "out").glob("stepwise_deep_side_by_side_*.png"))


def test_report_lists_the_claims_it_does_not_check(tmp_path):
    from stepwise.plots.report import UNCHECKED

    _deep_run(tmp_path / "runs" / "one", "vicreg", {"model": "mlp", "dataset": "digits"}, 1.0)
    text = build_report(tmp_path / "runs", tmp_path / "out" / "index.html").path.read_text()
    assert "Claims not checked here" in text
    assert any("Tian 2020" == paper and "Item 9" in claim for paper, claim, _ in UNCHECKED)
    for _, claim, _ in UNCHECKED:
        assert html.escape(claim) in text


def test_labels_of_a_config_with_an_ambiguous_name_fall_back_instead_of_failing():
    """``io.config_value`` refuses a name two sub-configs hold with different values; the report's labels use their
    defaults then, so one run's config layout never stops the whole report."""
    cfg = {"a": {"dataset": "digits", "model": "mlp"}, "b": {"dataset": "patches", "model": "cnn"}}
    assert _network_label(cfg) == "network on data"
