"""Hidden representations (Simon et al. E5): steps and effective dimension of a backbone's output, reported.

The theory note poses how the dimensionality of hidden representations evolves during training as a research
question, with no prediction to gate (theory note E5), and only the output layer is small-initialised, so every
statistic here is a ``reported`` check: measured and shown next to the embedding's verdicts.
"""

from __future__ import annotations

import numpy as np

from stepwise._precision import float64
from stepwise.compare.checks import Check, check
from stepwise.compare.metrics import subspace_similarity
from stepwise.compare.steps import StepDetection

__all__ = ["WHY", "participation_ratio", "hidden_checks", "backbone_embedding_similarity"]

WHY = ("theory note E5: the paper poses how the dimensionality of hidden representations evolves as a research "
       "question (no prediction to gate); the backbone is not small-initialised, only the output layer is")


@float64
def participation_ratio(eigenvalues: np.ndarray) -> np.ndarray:
    """(sum lambda)^2 / sum lambda^2 of each row of (T, k) eigenvalues (negative round-off clipped to 0): the
    effective number of dimensions a representation uses (0 for an all-zero row)."""
    lam = np.maximum(np.asarray(eigenvalues, dtype=np.float64), 0.0)
    den = np.sum(lam**2, axis=-1)
    return np.where(den > 0, np.sum(lam, axis=-1) ** 2 / np.where(den > 0, den, 1.0), 0.0)


@float64
def backbone_embedding_similarity(features: np.ndarray, embeddings: np.ndarray, k: int) -> tuple[float, float]:
    """(similarity, random reference): mean cos^2 of the principal angles between the top-k principal subspaces of
    the backbone features (n, p) and of the embeddings (n, d) on the same n points (each centred over the points),
    and k / n, its expected value for a random k-dimensional subspace of R^n."""
    f = np.asarray(features, np.float64).reshape(len(features), -1)
    z = np.asarray(embeddings, np.float64)
    n = f.shape[0]
    if z.shape[0] != n or not 1 <= k <= min(n, f.shape[1], z.shape[1]):
        raise ValueError(f"need features (n, p) and embeddings (n, d) on the same n points and 1 <= k <= min(n, p, d);"
                         f" got {f.shape}, {z.shape}, k = {k}")

    def top(a):
        u, _, _ = np.linalg.svd(a - a.mean(axis=0), full_matrices=False)
        return u[:, :k]

    return float(subspace_similarity(top(f), top(z))), k / n


@float64
def hidden_checks(det_feat: StepDetection, cov_feat: np.ndarray, *, similarity: tuple[float, float] | None = None,
                  k: int | None = None, function: str | None = None) -> list[Check]:
    """The reported checks of a backbone: well-separated steps in its output covariance spectrum (detected as for the
    embedding), its participation ratio at the end (and the start, in ``measured``), and, when given, the
    similarity of its top-k subspace with the embedding's (:func:`backbone_embedding_similarity`). ``function``,
    when given, says which function the backbone output is (e.g. the eval-mode module of a BatchNorm network) and
    ends each description."""
    cov_feat = np.asarray(cov_feat, np.float64)
    pr = participation_ratio(cov_feat)
    of = "" if function is None else f"; backbone: {function}"
    checks = [
        check("backbone_steps_detected", det_feat.n_steps, None, kind="reported", reason=WHY,
              description="well-separated steps in the backbone-output covariance spectrum "
              f"(width {cov_feat.shape[1]}), detected as for the embedding{of}", measured=det_feat.onsets),
        check("backbone_participation_ratio", float(pr[-1]), None, kind="reported", reason=WHY,
              description="effective dimension (sum lambda)^2 / sum lambda^2 of the backbone-output covariance at the "
              f"end of training (measured: at the first and last tracking point){of}",
              measured=[float(pr[0]), float(pr[-1])]),
    ]
    if similarity is not None:
        checks.append(check(
            "backbone_embedding_similarity", similarity[0], similarity[1], op=">=", kind="reported", reason=WHY,
            description=f"subspace similarity (mean cos^2 of principal angles) of the backbone's and the embedding's "
            f"top-{k} principal subspaces on the evaluation views; reference: a random subspace (k / n){of}"))
    return checks
