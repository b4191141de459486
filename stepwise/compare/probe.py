"""Linear probes of frozen embeddings: how much class information a representation holds at each tracking point
(reported next to the step checks of the deep experiments; never a gate)."""

from __future__ import annotations

import numpy as np

from stepwise._precision import float64

__all__ = ["linear_probe_accuracy"]


@float64
def linear_probe_accuracy(embeddings: np.ndarray, labels: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """Logistic-regression accuracy on frozen embeddings at each tracking point.

    Args:
      embeddings: (T, n, d) snapshots; labels: (n,).
      seed: seeds the split.
    Returns:
      (T,) test accuracy, training on a fixed random half of the n points and testing on the other half.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    n = labels.shape[0]
    perm = np.random.default_rng(seed).permutation(n)
    tr, te = perm[: n // 2], perm[n // 2 :]
    acc = np.zeros(embeddings.shape[0])
    for t, z in enumerate(np.asarray(embeddings, dtype=np.float64)):
        scaler = StandardScaler().fit(z[tr])
        clf = LogisticRegression(max_iter=500).fit(scaler.transform(z[tr]), labels[tr])
        acc[t] = clf.score(scaler.transform(z[te]), labels[te])
    return acc
