"""Kernel theory of Barlow Twins (Simon et al. 2023, section 3 of the theory note): kernel PCA of a contrastive kernel.

A kernel machine f(x) = W phi(x) with kernel K(x, x') = phi(x)^T phi(x') trained from small initialisation on the
linear-theory loss L = ||C - I||_F^2, C = (1/2n) sum_i [f(x_i) f(x_i')^T + f(x_i') f(x_i)^T], is the linear model of
:mod:`stepwise.theory.linear` in feature space, with Gamma_phi = (1/2n) Phi^T Z Phi. Everything is expressed through

- ``k_train``: the (2n, 2n) kernel over the augmented training points ordered (x_1..x_n, x'_1..x'_n), x_i and
  x'_i the two views of pair i;
- Z = [[0, I_n], [I_n, 0]], the swap matrix pairing each view with its partner;
- ``k_test_train``: (n_test, 2n) rows k(x) = [K(x, x~_a)]_a of new inputs against the training points.

The contrastive eigenproblem is solved in the generalised symmetric-definite form (no matrix square roots)

    (1/2n) K Z K a_j = gamma_j K a_j,      a_j^T K a_j = 1,

with a ridge on the right-hand K when it is singular. The gamma_j are the eigenvalues of Gamma_phi; v_j = Phi^T a_j
are its unit eigenvectors. Gradient descent from small initialisation learns the modes one at a time in order of
decreasing gamma_j and ends at

    f_j(x) = gamma_j^{-1/2} a_j^T k(x),      j = 1..d,

up to an orthogonal rotation of the d outputs (compare Gram matrices, projectors or Procrustes-aligned embeddings:
:mod:`stepwise.compare`). The step times follow from the initial embedding of the training points alone, since
W(0) v_j = F(0) a_j with F(0) = [f_0(x~_1) .. f_0(x~_2n)].

Everything here is NumPy/SciPy float64: these are the predictions the checks compare against.

References:
    J. Simon et al. On the Stepwise Nature of Self-Supervised Learning. ICML 2023 (arXiv 2303.15438), the kernel
    and infinite-width extension; theory note sections 3, 6.8 and 7.8.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
import scipy.linalg

from stepwise._precision import float64
from stepwise.theory import linear

__all__ = [
    "KernelPrediction",
    "center_kernel",
    "contrastive_eigh",
    "contrastive_eigenvalues",
    "contrastive_kernel",
    "initial_amplitudes",
    "linear_kernel",
    "positive_modes",
    "predict",
    "predict_embeddings",
    "rbf_kernel",
    "step_times",
    "swap_matrix",
]

DEFAULT_RIDGE = 1e-9  # measured: 1e-12 lets round-off eigenvalues of a rank-36 linear kernel (2n = 400) into the top 20


@float64
def swap_matrix(n: int) -> np.ndarray:
    """Z = [[0, I_n], [I_n, 0]] (2n, 2n): row a has a single 1 at the partner of augmented point a."""
    if n < 1:
        raise ValueError(f"need at least one pair; got n = {n}")
    z = np.zeros((2 * n, 2 * n))
    i = np.arange(n)
    z[i, i + n] = 1.0
    z[i + n, i] = 1.0
    return z


def _validate_k_train(k_train) -> np.ndarray:
    k = np.asarray(k_train, dtype=np.float64)
    if k.ndim != 2 or k.shape[0] != k.shape[1] or k.shape[0] % 2 or k.shape[0] < 2:
        raise ValueError(
            f"k_train must be a (2n, 2n) kernel matrix over the augmented points (x_1..x_n, x'_1..x'_n); got shape "
            f"{k.shape}"
        )
    if not np.all(np.isfinite(k)):
        raise ValueError("k_train has non-finite entries")
    scale = max(float(np.max(np.abs(k))), np.finfo(np.float64).tiny)
    asym = float(np.max(np.abs(k - k.T))) / scale
    if asym > 1e-10:
        raise ValueError(f"k_train must be symmetric; max |K - K^T| / max |K| = {asym:.3g}")
    return 0.5 * (k + k.T)


def _validate_ridge(ridge: float) -> float:
    if not (np.isfinite(ridge) and ridge >= 0):
        raise ValueError(f"ridge must be a finite number >= 0; got {ridge!r}")
    return float(ridge)


@float64
def contrastive_eigh(k_train, *, ridge: float = DEFAULT_RIDGE) -> tuple[np.ndarray, np.ndarray]:
    """Solve the contrastive eigenproblem (1/2n) K Z K a = gamma (K + r I) a, a^T (K + r I) a = 1.

    Args:
      k_train: (2n, 2n) symmetric kernel over the augmented training points, ordered (x_1..x_n, x'_1..x'_n).
      ridge: r in units of the mean diagonal of K (r = ridge * tr(K) / 2n). It regularises a singular K (e.g. a
        linear kernel with fewer features than 2n points): directions of K with eigenvalues far above r are
        unaffected, its null space gets gamma = 0 (exactly: a numerically singular K is solved on its range, so
        the count of positive modes does not depend on the BLAS). 0 requires K to be positive definite.

    Returns:
      ``(gammas, a)``: gammas (2n,) decreasing; a (2n, 2n), column j the coefficient vector a_j of mode j.

    Raises:
      ValueError: ``k_train`` not a finite symmetric (2n, 2n) matrix, a negative ridge, or K + r I not positive
        definite (the message says which ridge to use).
    """
    k = _validate_k_train(k_train)
    ridge = _validate_ridge(ridge)
    two_n = k.shape[0]
    r = ridge * float(np.trace(k)) / two_n
    kz = np.concatenate([k[:, two_n // 2 :], k[:, : two_n // 2]], axis=1)  # K Z: swap the column halves
    reduced = _range_space_eigh(k, r)
    if reduced is not None:
        return reduced
    lhs = kz @ k / two_n
    lhs = 0.5 * (lhs + lhs.T)
    rhs = k + r * np.eye(two_n)
    try:
        g, a = scipy.linalg.eigh(lhs, rhs)
    except np.linalg.LinAlgError as err:
        raise ValueError(
            f"K + ridge * mean(diag K) * I is not positive definite (ridge = {ridge:g}): the kernel matrix is "
            "singular or not a valid kernel; pass a larger ridge (e.g. 1e-8)"
        ) from err
    order = np.argsort(g)[::-1]
    return g[order], a[:, order]


def _range_space_eigh(k: np.ndarray, r: float) -> tuple[np.ndarray, np.ndarray] | None:
    """The contrastive eigenproblem of a numerically singular K, solved on its range; None when K is not singular.

    On the null space of K the left-hand side K Z K vanishes, so its gammas are exactly 0; solved as one pencil,
    they come out as round-off in K Z K divided by the ridge (up to eps ||K||^2 / r, which crosses
    POSITIVE_TOL * gamma_1 on some BLAS kernels and changes the count of positive modes). Writing K = U L U^T,
    a = U_r b on the range (eigenvalues above the numerical-rank cutoff 2n eps max|L| of numpy.linalg.matrix_rank)
    gives the reduced pencil (1/2n) L_r U_r^T Z U_r L_r b = gamma (L_r + r I) b, the same problem restricted to where
    it is not zero; the null-space columns are u / sqrt(l + r) with gamma = 0 (a^T (K + r I) a = 1 holds for both).
    A full-rank K, a ridge not above the cutoff, or an indefinite K (an eigenvalue below -cutoff) returns None, and
    the caller solves the full pencil as before.
    """
    two_n = k.shape[0]
    lam, u = np.linalg.eigh(k)
    cutoff = two_n * np.finfo(np.float64).eps * float(np.max(np.abs(lam)))
    null = lam <= cutoff
    if not np.any(null) or np.all(null) or r <= cutoff or float(lam[0]) < -cutoff:
        return None
    u_r, l_r = u[:, ~null], lam[~null]
    zu_r = np.concatenate([u_r[two_n // 2 :], u_r[: two_n // 2]], axis=0)  # Z U_r: swap the row halves
    lhs = l_r[:, None] * (u_r.T @ zu_r) * l_r[None, :] / two_n
    lhs = 0.5 * (lhs + lhs.T)
    g_r, b = scipy.linalg.eigh(lhs, np.diag(l_r + r))
    a_null = u[:, null] / np.sqrt(lam[null] + r)
    s, v = np.linalg.eigh(a_null.T @ (k @ a_null) + r * (a_null.T @ a_null))  # round-off in K u: re-normalise
    a_null = a_null @ (v / np.sqrt(s))
    g = np.concatenate([g_r, np.zeros(a_null.shape[1])])
    a = np.concatenate([u_r @ b, a_null], axis=1)
    order = np.argsort(g, kind="stable")[::-1]
    return g[order], a[:, order]


@float64
def contrastive_eigenvalues(k_train, *, ridge: float = DEFAULT_RIDGE) -> np.ndarray:
    """The (2n,) eigenvalues gamma_j of the contrastive eigenproblem, decreasing (see :func:`contrastive_eigh`).

    They equal the eigenvalues of Gamma_phi = (1/2n) Phi^T Z Phi for any feature map with K = Phi Phi^T (padded
    with zeros), e.g. of the linear theory's Gamma for the linear kernel K = X X^T.

    Example:
      >>> x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [0.1, 1.0]])  # pairs (x_1, x'_1), (x_2, x'_2)
      >>> np.round(contrastive_eigenvalues(x @ x.T, ridge=1e-12)[:2], 6)  # Gamma = [[0.5, 0.05], [0.05, 0.5]]
      array([0.55, 0.45])
    """
    return contrastive_eigh(k_train, ridge=ridge)[0]


POSITIVE_TOL = 1e-6  # gammas below POSITIVE_TOL * gamma_1 count as not positive (the null space of K has gamma = 0
# exactly: _range_space_eigh), since their step times would be at least 1e6 times the first


@float64
def positive_modes(gammas: np.ndarray) -> int:
    """Number of contrastive eigenvalues that are numerically positive (> POSITIVE_TOL * gamma_1).

    Below that level the eigenvalues of a singular K are round-off in K Z K divided by the ridge, not modes the
    model can learn (their step times would be astronomically long).
    """
    gammas = np.asarray(gammas, dtype=np.float64)
    return int(np.sum(gammas > POSITIVE_TOL * max(float(gammas[0]), 0.0))) if gammas[0] > 0 else 0


def _validate_d(gammas: np.ndarray, d: int) -> None:
    if not 1 <= d <= gammas.size:
        raise ValueError(f"d must be in [1, 2n = {gammas.size}]; got {d}")
    n_pos = positive_modes(gammas)
    if n_pos < d:
        raise ValueError(
            f"only {n_pos} contrastive eigenvalues are positive (above {POSITIVE_TOL:g} x gamma_1), so d = {d} modes "
            f"cannot all be learned; use d <= {n_pos}"
        )


@float64
def predict_embeddings(
    k_train, k_test_train, d: int, *, ridge: float = DEFAULT_RIDGE, eig: tuple[np.ndarray, np.ndarray] | None = None
) -> np.ndarray:
    """Final embedding reached by gradient descent from small initialisation, on new inputs.

    f_j(x) = gamma_j^{-1/2} a_j^T k(x) for the top-d modes: the whitened top-d eigenfunctions of the contrastive
    operator (kernel PCA of the contrastive kernel). Defined up to an orthogonal rotation of the d outputs.

    Args:
      k_train: (2n, 2n) kernel over the augmented training points, ordered (x_1..x_n, x'_1..x'_n).
      k_test_train: (n_test, 2n) kernel between the new inputs and the training points (same ordering).
      d: embedding dimension, at most the number of positive gammas.
      ridge: see :func:`contrastive_eigh`.
      eig: ``(gammas, a)`` from :func:`contrastive_eigh` if already computed.

    Returns:
      (n_test, d) predicted embeddings. For the training points themselves (k_test_train = k_train) the
      prediction satisfies C = (1/2n) F Z F^T = I_d.

    Raises:
      ValueError: shapes that do not match, or fewer than d positive eigenvalues.
    """
    k = _validate_k_train(k_train)
    kt = np.asarray(k_test_train, dtype=np.float64)
    if kt.ndim != 2 or kt.shape[1] != k.shape[0]:
        raise ValueError(f"k_test_train must be (n_test, 2n = {k.shape[0]}); got shape {kt.shape}")
    gammas, a = contrastive_eigh(k, ridge=ridge) if eig is None else eig
    _validate_d(gammas, d)
    return kt @ (a[:, :d] / np.sqrt(gammas[:d]))


@float64
def center_kernel(k_train, k_test_train=None) -> tuple[np.ndarray, np.ndarray | None]:
    """The kernel of the centred feature map phi_c(x) = phi(x) - mean_a phi(x~_a) over the 2n training points.

    A loss on centred embeddings (the centred Barlow Twins form, VICReg's covariance term) sees f(x) - mean_a f(x~_a)
    = W phi_c(x): the kernel theory then applies with K_c = H K H (H = I - 1/2n) and
    k_c(x) = k(x) - mean_a K(x, x~_a) - mean_b K(x~_b, .) + mean K (kernel PCA's usual centring).

    Args:
      k_train: (2n, 2n) training kernel; k_test_train: optional (n_test, 2n) rows of new inputs.

    Returns:
      ``(k_train_c, k_test_train_c)`` (the second None when ``k_test_train`` is None).
    """
    k = _validate_k_train(k_train)
    col = k.mean(axis=0)
    mean = float(col.mean())
    kc = k - col[None, :] - col[:, None] + mean
    if k_test_train is None:
        return 0.5 * (kc + kc.T), None
    kt = np.asarray(k_test_train, dtype=np.float64)
    if kt.ndim != 2 or kt.shape[1] != k.shape[0]:
        raise ValueError(f"k_test_train must be (n_test, 2n = {k.shape[0]}); got shape {kt.shape}")
    return 0.5 * (kc + kc.T), kt - kt.mean(axis=1, keepdims=True) - col[None, :] + mean


@float64
def contrastive_kernel(k_x_train, k_y_train) -> np.ndarray:
    """Two-point contrastive kernel K_Gamma(x, y) = phi(x)^T Gamma_phi phi(y) = (1/2n) k(x)^T Z k(y).

    = (1/2n) sum_i [K(x, x_i) K(x'_i, y) + K(x, x'_i) K(x_i, y)]: the kernel whose top eigenfunctions (relative
    to K) the model learns.

    Args:
      k_x_train: (n_x, 2n) kernel rows of the inputs x against the training points.
      k_y_train: (n_y, 2n) the same for y.

    Returns:
      (n_x, n_y) matrix.
    """
    kx = np.asarray(k_x_train, dtype=np.float64)
    ky = np.asarray(k_y_train, dtype=np.float64)
    if kx.ndim != 2 or ky.ndim != 2 or kx.shape[1] != ky.shape[1] or kx.shape[1] % 2:
        raise ValueError(f"need (n_x, 2n) and (n_y, 2n) kernel rows; got {kx.shape} and {ky.shape}")
    half = kx.shape[1] // 2
    ky_swapped = np.concatenate([ky[:, half:], ky[:, :half]], axis=1)  # (Z k(y)^T)^T
    return kx @ ky_swapped.T / kx.shape[1]


# ----------------------------------------------------------------------------------------------------------------
# Dynamics: amplitudes and step times (the linear theory in feature space).

AmplitudeMethod = Literal["gram_schmidt", "projection", "isotropic"]


@float64
def initial_amplitudes(
    k_train,
    f0_train,
    *,
    method: AmplitudeMethod = "gram_schmidt",
    ridge: float = DEFAULT_RIDGE,
    eig: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Effective initial embedding eigenvalue a_j = gamma_j r_j^2 of each of the top-d modes.

    p_j = W(0) v_j = F(0) a_j, with F(0) the (d, 2n) initial embeddings of the training points; r_j as in
    :func:`stepwise.theory.linear.initial_amplitudes` (Gram-Schmidt by default).

    Args:
      k_train: (2n, 2n) training kernel.
      f0_train: (2n, d) initial embeddings of the augmented training points, same ordering as ``k_train``. The
        initial function must lie in the span of the training points' features (e.g. f_0 = B_0 k(x)) or be tiny.
      method: ``gram_schmidt``, ``projection`` or ``isotropic`` (see the linear theory).

    Returns:
      (d,) amplitudes; ``nan`` where gamma_j <= 0.
    """
    k = _validate_k_train(k_train)
    f0 = np.asarray(f0_train, dtype=np.float64)
    if f0.ndim != 2 or f0.shape[0] != k.shape[0]:
        raise ValueError(f"f0_train must be (2n = {k.shape[0]}, d); got shape {f0.shape}")
    gammas, a = contrastive_eigh(k, ridge=ridge) if eig is None else eig
    return linear.eigenbasis_amplitudes(gammas, a, f0.T, method)


@float64
def step_times(k_train, f0_train, lr: float, *, ridge: float = DEFAULT_RIDGE) -> np.ndarray:
    """Predicted GD half-rise steps of the kernel model (sorted), as :func:`stepwise.theory.linear.step_times`.

    For gradient descent on L = ||C - I||_F^2 with step ``lr`` in the RKHS (W <- W - lr dL/dW in feature space,
    i.e. f <- f - lr (4/2n) (C - I) F Z k(.)), the j-th largest eigenvalue of C reaches 1/2 after this many updates.
    """
    return predict(k_train, f0_train, lr, ridge=ridge).step_times


@dataclasses.dataclass(frozen=True)
class KernelPrediction(linear.ModePrediction):
    """All predictions of the kernel theory for one (K, F(0), lr): those of
    :class:`stepwise.theory.linear.ModePrediction` (``gammas``: the (2n,) contrastive eigenvalues;
    ``eigenvalue_curves``: the eigenvalues of C per mode) and

    Attributes:
      coefficients: (2n, 2n) a_j as columns (a_j^T K a_j = 1).
    """

    coefficients: np.ndarray


@float64
def predict(
    k_train, f0_train, lr: float, *, ridge: float = DEFAULT_RIDGE, eig: tuple[np.ndarray, np.ndarray] | None = None
) -> KernelPrediction:
    """Every kernel-theory prediction for GD with learning rate ``lr`` from initial training embeddings ``f0_train``.

    Args:
      k_train: (2n, 2n) training kernel.
      f0_train: (2n, d) initial embeddings of the training points.
      lr: learning rate, 0 < lr < 1/(4 gamma_1).
      ridge, eig: see :func:`contrastive_eigh`.

    Raises:
      ValueError: bad shapes, fewer than d positive gammas, or a learning rate beyond 1/(4 gamma_1).
    """
    k = _validate_k_train(k_train)
    gammas, a = contrastive_eigh(k, ridge=ridge) if eig is None else eig
    f0 = np.asarray(f0_train, dtype=np.float64)
    if f0.ndim != 2 or f0.shape[0] != k.shape[0]:
        raise ValueError(f"f0_train must be (2n = {k.shape[0]}, d); got shape {f0.shape}")
    d = f0.shape[1]
    _validate_d(gammas, d)
    if not 0 < lr < linear.stability_limit(gammas[0]):
        raise ValueError(
            f"lr must lie in (0, 1/(4 gamma_1) = {linear.stability_limit(gammas[0]):.6g}) for stable GD; got {lr}"
        )
    amps = linear.eigenbasis_amplitudes(gammas, a, f0.T, "gram_schmidt")
    return KernelPrediction.from_amplitudes(gammas, amps, float(lr), coefficients=a)


# ----------------------------------------------------------------------------------------------------------------
# Simple kernels on flattened inputs (the NTK lives in :mod:`stepwise.ntk`).


def _flat(x, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 2:
        raise ValueError(f"{name} must be a batch (n, ...) of inputs; got shape {x.shape}")
    return x.reshape(x.shape[0], -1)


@float64
def linear_kernel(x1, x2=None) -> np.ndarray:
    """K(x, y) = x . y on flattened inputs (n1, ...), (n2, ...) -> (n1, n2). The kernel of the linear theory."""
    a = _flat(x1, "x1")
    b = a if x2 is None else _flat(x2, "x2")
    return a @ b.T


@float64
def rbf_kernel(x1, x2=None, *, bandwidth: float) -> np.ndarray:
    """K(x, y) = exp(-|x - y|^2 / (2 bandwidth^2)) on flattened inputs -> (n1, n2)."""
    if not (np.isfinite(bandwidth) and bandwidth > 0):
        raise ValueError(f"bandwidth must be a finite number > 0; got {bandwidth!r}")
    a = _flat(x1, "x1")
    b = a if x2 is None else _flat(x2, "x2")
    sq = np.sum(a**2, 1)[:, None] + np.sum(b**2, 1)[None, :] - 2.0 * a @ b.T
    return np.exp(-np.maximum(sq, 0.0) / (2.0 * bandwidth**2))
