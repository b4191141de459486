"""The empirical-NTK benchmark (benchmarks/bench_ntk.py): one case in-process per method, and the CLI end to end."""

import json

import numpy as np
import pytest

from benchmarks import bench_ntk


def test_cases_agree_across_methods_and_report_consistent_numbers():
    cases = [bench_ntk.run_case("mlp", method, 8, quick=True) for method in bench_ntk.methods()]
    assert {c["method"] for c in cases} >= {"jax", "nt_jacobian_contraction"}
    for c in cases:
        assert c["kernel_finite"] and c["n"] == 8 and c["dtype"] == "float64"  # the suite enables x64
        assert c["flops_lower_bound"] == 2 * 8 * 8 * c["params"] * c["out_dim"]
        assert c["achieved_flops_per_s"] == pytest.approx(c["flops_lower_bound"] / c["compute_s"])
        assert c["plan"]["peak_bytes"] == c["estimated_peak_bytes"] <= c["budget_bytes"]
        assert c["peak_rss_bytes"] >= c["baseline_rss_bytes"] > 0
    # the same inputs and weights: every method computed the same kernel. Contracting over P = 340 parameters in
    # another order moves K_ij by <= P eps |J_i| |J_j| = P eps sqrt(K_ii K_jj) (K is PSD), so the trace (a sum of
    # non-negative K_ii) agrees to P eps = 7.5e-14 relative and the Frobenius norm to P eps sqrt(n) = 2e-13
    # (measured 1.1e-16); rtol 1e-10, while a float32 path would be ~1e-7 off.
    np.testing.assert_allclose([c["kernel_trace"] for c in cases], cases[0]["kernel_trace"], rtol=1e-10)
    np.testing.assert_allclose([c["kernel_fro"] for c in cases], cases[0]["kernel_fro"], rtol=1e-10)


def test_cli_quick_writes_the_json_and_skips_what_would_take_too_long(tmp_path):
    code = bench_ntk.main(["--quick", "--methods", "jax", "--sizes", "8", "4096", "--max-case-seconds", "1e-6",
                           "--out", str(tmp_path)])
    assert code == 0
    data = json.loads((tmp_path / "bench_ntk.json").read_text())
    ran, skipped = data["cases"]
    assert ran["n"] == 8 and ran["dtype"] == "float32" and ran["within_budget"]  # workers run without x64
    assert ran["peak_rss_bytes"] > ran["baseline_rss_bytes"] > 0
    assert skipped["n"] == 4096 and "predicted" in skipped["skipped"]
    assert data["machine"]["gemm_flops_per_s"] > 0 and data["quick"] is True and data["complete"] is True
    assert set(data["methods"]) == {"jax"} and "versions" in data
    assert (tmp_path / "bench_ntk.png").stat().st_size > 10_000  # the figure, drawn from the JSON


def test_unknown_model_or_method_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown benchmark model"):
        bench_ntk.run(tmp_path, models=["vgg"], quick=True)
    with pytest.raises(ValueError, match="unknown or non-working method"):
        bench_ntk.run(tmp_path, method_names=["nt_structured_derivatives"], quick=True)
