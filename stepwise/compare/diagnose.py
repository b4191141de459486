"""Why a check of a trained network failed: too few steps trained, the kernel moved, or the prediction disagrees.

A failing verdict of ``stepwise verify`` has three usual readings, and a researcher needs to know which applies
before concluding that "the theory fails" for an architecture:

- **too few steps trained**: the tracked embedding spectrum was still changing at the end of training
  (:data:`STILL_LEARNING`), so modes may still be on their way; train longer.
- **the kernel moved**: the empirical NTK changed shape between initialisation and the end of training
  (:data:`KERNEL_MOVED`); the kernel theory holds the NTK fixed (its steps, their order, and the final embedding
  are derived from a fixed kernel's eigenfunctions), so its predictions are not expected to hold for this network.
  The shape is what counts: the distance between the two kernels each scaled to unit Frobenius norm. Their overall
  scale is reported separately (the ratio of top eigenvalues): with a small-initialised output layer the NTK at
  initialisation is that layer's alone (the backbone's gradients are proportional to the output weights), so the
  kernel's size grows with the embedding's in every such run, which rescales step times but not which functions
  are learned or in what order.
- **the prediction disagrees**: neither of the above, so the network, trained to a settled spectrum with a kernel
  close to its initial one, does something the theory does not predict.

The statistics are reported (:func:`diagnosis_checks`, kind ``reported``), never gated: they explain verdicts.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from stepwise._precision import float64
from stepwise.compare.checks import Check, check

__all__ = ["CAUSES", "KERNEL_MOVED", "STILL_LEARNING", "LAST_FRACTION", "Diagnosis", "diagnose", "diagnosis_checks",
           "failure_causes", "spectrum_change_at_end", "kernel_change"]

#: The readings of a failed check, in the order they are tested.
CAUSES = {
    "too_few_steps_trained": "too few steps trained: the spectrum was still changing at the end; train longer",
    "kernel_moved": "the kernel moved: the NTK changed from initialisation to the end of training, so the "
                    "fixed-kernel theory is not expected to hold",
    "prediction_disagrees": "the prediction disagrees: trained to a settled spectrum with a kernel close to its "
                            "initial one, the network differs from the theory",
}

#: The end of training inspected for a still-changing spectrum: its last tenth.
LAST_FRACTION = 0.1
#: A spectrum still changes if an eigenvalue moved by more than this fraction of the top eigenvalue over the last
#: tenth of training: half the level at which a mode counts as learned (10% of the top one,
#: :func:`stepwise.compare.detect_steps`), so a mode could still be appearing.
STILL_LEARNING = 0.05
#: The kernel moved if || K_end / ||K_end||_F - K_init / ||K_init||_F ||_F (centred training block) exceeds this:
#: the distance of unit-norm kernels runs from 0 (same shape) to sqrt(2) (orthogonal PSD kernels); at 0.5 their
#: alignment <K_init, K_end> / (||K_init|| ||K_end||) is 0.875, a change of the kernel's eigenfunctions at first
#: order as large as half the kernel, so a disagreement with the theory cannot be told from the kernel having moved.
KERNEL_MOVED = 0.5



@float64
def spectrum_change_at_end(t: np.ndarray, eigenvalues: np.ndarray, fraction: float = LAST_FRACTION) -> float:
    """max_j |lambda_j(T) - lambda_j(T - fraction (T - t_0))| / lambda_1(T) over the tracked eigenvalues.

    Args:
      t: (T,) increasing tracking times; eigenvalues: (T, k) tracked eigenvalues (any order within a row).
      fraction: the part of training at its end that is inspected (the tracking point at or before its start is
        compared with the last one).
    """
    t = np.asarray(t, np.float64)
    eig = np.sort(np.asarray(eigenvalues, np.float64), axis=1)[:, ::-1]
    if eig.ndim != 2 or eig.shape[0] != t.shape[0] or t.size < 2:
        raise ValueError(f"need (T, k) eigenvalues at T = len(t) >= 2 times; got t {t.shape}, eigenvalues {eig.shape}")
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1); got {fraction}")
    start = t[-1] - fraction * (t[-1] - t[0])
    i = max(int(np.searchsorted(t, start, side="right")) - 1, 0)
    i = min(i, t.size - 2)  # at least the last two tracking points
    top = max(float(eig[-1, 0]), np.finfo(np.float64).tiny)
    return float(np.max(np.abs(eig[-1] - eig[i])) / top)


@float64
def kernel_change(k_init: np.ndarray, k_final: np.ndarray) -> tuple[float, float]:
    """(|| Kc_final / ||Kc_final||_F - Kc_init / ||Kc_init||_F ||_F, lambda_max(Kc_final) / lambda_max(Kc_init)): the
    change of shape of the centred kernels (0 for a rescaled kernel, sqrt(2) at most for PSD kernels) and of size.

    A final kernel that is zero (or not finite) after centring, from a network whose output no longer varies with its
    input through its parameters (e.g. every unit before the output layer dead), has no shape: ``(nan, 0.0)`` (or
    ``(nan, nan)`` when not finite), which :class:`Diagnosis` reads as "the kernel moved" instead of ending the run
    after training. An initial kernel that is zero after centring is an error (nothing to compare with)."""
    def centred(k):
        k = np.asarray(k, np.float64)
        k = 0.5 * (k + k.T)
        return k - k.mean(axis=0, keepdims=True) - k.mean(axis=1, keepdims=True) + k.mean()
    a, b = centred(k_init), centred(k_final)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"the kernels must be square and of one shape; got {a.shape} and {b.shape}")
    norm_a, norm_b = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if not norm_a > 0:
        raise ValueError("the initial kernel is zero after centring; nothing to compare")
    if not norm_b > 0:
        return float("nan"), (0.0 if norm_b == 0 else float("nan"))
    top_a, top_b = np.linalg.eigvalsh(a)[-1], np.linalg.eigvalsh(b)[-1]
    return float(np.linalg.norm(b / norm_b - a / norm_a)), float(top_b / top_a)


@dataclasses.dataclass(frozen=True)
class Diagnosis:
    """The statistics behind the readings (see the module docstring)."""

    spectrum_change_at_end: float
    kernel_change: float
    gamma_1_ratio: float

    @property
    def still_learning(self) -> bool:
        return not self.spectrum_change_at_end <= STILL_LEARNING  # nan counts as still learning

    @property
    def kernel_moved(self) -> bool:
        return not self.kernel_change <= KERNEL_MOVED

    def causes(self, name: str) -> list[str]:
        """The readings that apply to a failed theory or baseline check named ``name`` (keys of :data:`CAUSES`);
        every such check of a trained network tests a fixed-kernel prediction, so the readings do not depend on
        the name (kept for the record)."""
        found = []
        if self.still_learning:
            found.append("too_few_steps_trained")
        if self.kernel_moved:
            found.append("kernel_moved")
        return found or ["prediction_disagrees"]

    def summary(self) -> dict:
        return {"spectrum_change_at_end": self.spectrum_change_at_end, "kernel_change": self.kernel_change,
                "gamma_1_ratio": self.gamma_1_ratio, "still_learning": self.still_learning,
                "kernel_moved": self.kernel_moved, "still_learning_above": STILL_LEARNING,
                "kernel_moved_above": KERNEL_MOVED, "last_fraction": LAST_FRACTION}


@float64
def diagnose(t: np.ndarray, eigenvalues: np.ndarray, k_init: np.ndarray, k_final: np.ndarray) -> Diagnosis:
    """The diagnosis of one run from its tracked spectrum and its NTKs (centred training block) at both ends."""
    change, ratio = kernel_change(k_init, k_final)
    return Diagnosis(spectrum_change_at_end(t, eigenvalues), change, ratio)


@float64
def diagnosis_checks(diag: Diagnosis) -> list[Check]:
    """The diagnosis as ``reported`` checks (explanations, never verdicts)."""
    return [
        check("spectrum_change_at_end", diag.spectrum_change_at_end, STILL_LEARNING, op="<=", kind="reported",
              reason="explains failures, not gated: above the reference the spectrum was still changing at the "
                     "end of training (half the 10%-of-top level at which a mode counts as learned), so a failing "
                     "step count may only need more steps",
              description=f"largest change of a tracked eigenvalue over the last {LAST_FRACTION:.0%} of training, "
                          "relative to the top eigenvalue"),
        check("ntk_change", diag.kernel_change, KERNEL_MOVED, op="<=", kind="reported",
              reason="explains failures, not gated: the kernel theory holds the NTK fixed; above the reference the "
                     "kernel changed shape (unit-norm kernels' alignment below 0.875), so a failing theory check says "
                     "the fixed-kernel picture does not apply rather than that its prediction is wrong",
              description="|| K_end/||K_end|| - K_init/||K_init|| ||_F: change of shape of the centred NTK on the "
                          "training pairs (its change of size: gamma_1_ratio in measured)",
              measured={"gamma_1_ratio": diag.gamma_1_ratio}),
    ]


@float64
def failure_causes(checks: list[Check], diag: Diagnosis) -> dict[str, list[str]]:
    """For every failed theory or baseline check, the readings of :data:`CAUSES` that apply (keys). A failed
    consistency check is a defect of the code, not of the network, and gets none."""
    return {c.name: diag.causes(c.name) for c in checks if c.kind in ("theory", "baseline") and c.passed is False}
