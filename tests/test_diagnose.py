"""stepwise.compare.diagnose: why a check of a trained network failed (issue 17 item 4)."""

import numpy as np
import pytest

from stepwise.compare import check
from stepwise.compare import diagnose as dg


def _rises(t, onsets, width=1.0):
    """(T, 3) logistic rises to 1, 0.8, 0.6 at the given onsets."""
    heights = np.array([1.0, 0.8, 0.6])
    return heights / (1.0 + np.exp(-(t[:, None] - np.asarray(onsets)[None]) / width))


def test_spectrum_change_at_end_matches_a_direct_computation():
    t = np.linspace(0.0, 100.0, 101)
    eig = _rises(t, [10.0, 30.0, 96.0])  # the third mode is rising at the end
    # last tenth: t from 90 to 100, tracking points 90 and 100; reference by hand, sorted rows
    rows = np.sort(eig[[90, 100]], axis=1)[:, ::-1]
    expected = np.max(np.abs(rows[1] - rows[0])) / rows[1, 0]
    assert dg.spectrum_change_at_end(t, eig) == pytest.approx(expected, rel=1e-12)
    assert dg.spectrum_change_at_end(t, eig) > dg.STILL_LEARNING
    settled = _rises(t, [10.0, 30.0, 50.0])
    assert dg.spectrum_change_at_end(t, settled) < 1e-6  # every rise is > 40 widths past its onset


def test_spectrum_change_uses_at_least_the_last_two_points_and_refuses_bad_shapes():
    t = np.array([0.0, 1.0])
    eig = np.array([[1.0, 0.1], [2.0, 0.1]])
    assert dg.spectrum_change_at_end(t, eig) == pytest.approx(0.5)  # |2 - 1| / 2
    with pytest.raises(ValueError, match="T = len"):
        dg.spectrum_change_at_end(t, eig[:1])
    with pytest.raises(ValueError, match="fraction"):
        dg.spectrum_change_at_end(t, eig, fraction=1.0)


def test_kernel_change_measures_shape_and_size_separately():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 4))
    k = a @ a.T
    assert dg.kernel_change(k, k) == (0.0, 1.0)
    change, ratio = dg.kernel_change(k, 3.0 * k)  # a rescaled kernel has the same shape
    assert change < 1e-12 and ratio == pytest.approx(3.0, rel=1e-12)
    # reference: two kernels on orthogonal centred subspaces are orthogonal in Frobenius: distance sqrt(2)
    q, _ = np.linalg.qr(np.concatenate([np.ones((6, 1)), rng.normal(size=(6, 4))], axis=1))
    k1, k2 = np.outer(q[:, 1], q[:, 1]), np.outer(q[:, 2], q[:, 2]) + np.outer(q[:, 3], q[:, 3])
    assert dg.kernel_change(k1, k2)[0] == pytest.approx(np.sqrt(2.0), rel=1e-12)
    # direct formula on centred kernels
    c = np.eye(6) - 1.0 / 6
    b = rng.normal(size=(6, 3))
    ka, kb = c @ k @ c, c @ (b @ b.T) @ c
    expected = np.linalg.norm(kb / np.linalg.norm(kb) - ka / np.linalg.norm(ka))
    assert dg.kernel_change(k, b @ b.T)[0] == pytest.approx(expected, rel=1e-12)
    # centring: adding a constant to every entry changes nothing
    assert dg.kernel_change(k, k + 5.0)[0] < 1e-12
    with pytest.raises(ValueError, match="one shape"):
        dg.kernel_change(k, k[:5, :5])
    with pytest.raises(ValueError, match="initial kernel is zero after centring"):
        dg.kernel_change(np.ones((3, 3)), k[:3, :3])
    # a final kernel with no shape left (a constant kernel: the output no longer varies with the input) or not finite
    # is read as moved, not an error that would lose the trained run
    change, ratio = dg.kernel_change(k, np.full((6, 6), 2.0))
    assert np.isnan(change) and ratio == 0.0
    change, ratio = dg.kernel_change(k, np.full((6, 6), np.nan))
    assert np.isnan(change) and np.isnan(ratio)
    diag = dg.Diagnosis(0.0, change, ratio)
    assert diag.kernel_moved and diag.causes("steps_detected") == ["kernel_moved"]
    [_, ntk] = dg.diagnosis_checks(diag)
    assert ntk.kind == "reported" and ntk.passed is None and np.isnan(ntk.value)


@pytest.mark.parametrize("spectrum,kernel,name,expected", [
    (0.2, 0.1, "steps_detected", ["too_few_steps_trained"]),
    (0.01, 1.0, "steps_detected", ["kernel_moved"]),  # the steps too are a fixed-kernel prediction
    (0.01, 1.0, "step_order_kendall_tau", ["kernel_moved"]),
    (0.2, 1.0, "final_embedding_ntk_similarity", ["too_few_steps_trained", "kernel_moved"]),
    (0.01, 0.1, "final_embedding_ntk_similarity", ["prediction_disagrees"]),
    (float("nan"), 0.1, "learned_modes", ["too_few_steps_trained"]),
])
def test_causes(spectrum, kernel, name, expected):
    diag = dg.Diagnosis(spectrum, kernel, 1.0)
    assert diag.causes(name) == expected


def test_failure_causes_lists_failed_theory_and_baseline_checks_only_and_checks_are_reported():
    diag = dg.Diagnosis(0.01, 1.0, 4.0)
    checks = [check("steps_detected", 1, 4, op=">=", kind="theory", reason="r"),
              check("step_order_kendall_tau", 0.9, 0.5, op=">=", kind="theory", reason="r"),
              check("final_embedding_ntk_similarity", 0.1, 0.5, op=">=", kind="baseline", reason="r"),
              check("x", 0.0, 1.0, op=">=", kind="reported", reason="r"),
              check("onsets_strictly_ordered", 0.0, 1.0, op=">=", kind="consistency", reason="r")]
    assert dg.failure_causes(checks, diag) == {"steps_detected": ["kernel_moved"],
                                               "final_embedding_ntk_similarity": ["kernel_moved"]}
    settled = dg.Diagnosis(0.01, 0.1, 1.1)
    assert dg.failure_causes(checks, settled) == {"steps_detected": ["prediction_disagrees"],
                                                  "final_embedding_ntk_similarity": ["prediction_disagrees"]}
    reported = dg.diagnosis_checks(diag)
    assert [c.name for c in reported] == ["spectrum_change_at_end", "ntk_change"]
    assert all(c.kind == "reported" and c.passed is None for c in reported)
    assert reported[1].value == 1.0 and reported[1].measured == {"gamma_1_ratio": 4.0}
    assert set(dg.CAUSES) == {"too_few_steps_trained", "kernel_moved", "prediction_disagrees"}
