"""The symmetric binary hierarchical latent tree model (SB-HLTM) of Tian et al. 2020 as a JAX sampler.

Tree (theory note tian2020, section 2.5; definition [M] and [V-code] ``ssl/hltm/simCLR_hltm.py``): binary latents
z in {0, 1} on a tree of ``depth`` levels below the root, each node with ``children`` children. Levels are counted
from the root here, t = 0 (the root z0) .. ``depth`` (the leaves, the observed inputs x); level t has
``children**t`` nodes in breadth-first (left-to-right) order and node j of level t has parent j // children. (The
note and the reference code count depth from the leaves: d = depth - t.) Each edge has a polarity rho in [-1, 1]:

    P(z_child | z_parent) = 1/2 [[1 + rho, 1 - rho], [1 - rho, 1 + rho]],   i.e. P(z_child = z_parent) = (1 + rho)/2

sampled as z_child = z_parent XOR Bernoulli((1 - rho) / 2). The root is Bernoulli(1/2).

Views (note 1.1 and 5.1): the root is the instance. An anchor x and its positive x+ are two independent top-down
samples of the whole tree given the same root (the augmentation resamples every latent below the root); the
negative x- is a sample with an independent root (so half of the negatives share the anchor's root, as in the
reference code).

Exact facts the checks use ([D]): polarities multiply along a path, so corr(z_mu, z0) = rho_0mu = prod of the
polarities on the path root -> mu (:func:`path_polarities`); two resamplings of the same node given one root have
correlation rho_0mu^2.

References:
    Y. Tian, L. Yu, X. Chen, S. Ganguli. Understanding Self-supervised Learning with Dual Deep Networks.
    arXiv 2010.00578 (2020), section "HLTM" (section 6 per the official code's README).
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike

__all__ = ["HLTM", "HLTMViews", "hltm_from_polarities", "make_hltm", "path_polarities", "root_population",
           "sample_latents", "sample_views"]


@dataclasses.dataclass(frozen=True)
class HLTM:
    """A symmetric binary latent tree: its shape and the polarity of every edge.

    Build it with :func:`make_hltm` (random polarities) or :func:`hltm_from_polarities` (given ones), which
    validate. It is a pytree (``polarities`` are the leaves; ``depth`` and ``children`` are static), so it can be
    passed to jitted and vmapped functions.

    Attributes:
      polarities: ``depth`` arrays; ``polarities[t - 1]`` has shape (children**t,), the polarity of the edge from
        each node of level t to its parent.
      depth: number of levels below the root (>= 1); there are ``children**depth`` leaves.
      children: children per node (>= 1).
    """

    polarities: tuple[jax.Array, ...]
    depth: int = dataclasses.field(metadata=dict(static=True))
    children: int = dataclasses.field(metadata=dict(static=True))

    @property
    def n_leaves(self) -> int:
        return self.children**self.depth

    def level_sizes(self) -> tuple[int, ...]:
        """Nodes per level t = 0 (root) .. depth (leaves)."""
        return tuple(self.children**t for t in range(self.depth + 1))


jax.tree_util.register_dataclass(HLTM, data_fields=["polarities"], meta_fields=["depth", "children"])


class HLTMViews(NamedTuple):
    """Anchor, positive and negative samples of an SB-HLTM with all their latents.

    Attributes:
      x, x_pos, x_neg: (N, n_leaves) leaves as floats in {0, 1}.
      latents, latents_pos, latents_neg: ``depth + 1`` int32 arrays per view; entry t has shape (N, children**t)
        (t = 0: the root, t = depth: the leaves again, as integers).
    """

    x: jax.Array
    x_pos: jax.Array
    x_neg: jax.Array
    latents: tuple[jax.Array, ...]
    latents_pos: tuple[jax.Array, ...]
    latents_neg: tuple[jax.Array, ...]


def _check_int(name: str, value, minimum: int) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def make_hltm(depth: int, children: int = 2, polarity_range: tuple[float, float] = (0.7, 1.0), *,
              key: jax.Array, random_sign: bool = True) -> HLTM:
    """A tree with random polarities, as in the reference code: rho = U[lo, hi] x (+-1 with probability 1/2).

    The same ``key`` with another ``polarity_range`` gives the same tree with |rho| rescaled (rho is
    sign x (lo + u (hi - lo)) with the same u and sign), so sweeps over the range compare like with like.

    Args:
      depth: levels below the root (>= 1).
      children: children per node (>= 1).
      polarity_range: (lo, hi) of |rho| (``random_sign``) or of rho itself; within [-1, 1], lo <= hi.
      key: PRNG key.
      random_sign: flip each polarity's sign with probability 1/2 ([V-code]); then 0 <= lo is required.

    Returns:
      The :class:`HLTM`.

    Raises:
      ValueError: depth < 1, children < 1, or a polarity range outside [-1, 1] (or [0, 1] with random signs).

    Example:
      >>> tree = make_hltm(3, 2, (0.8, 1.0), key=jax.random.key(0))
      >>> tree.n_leaves, tuple(p.shape for p in tree.polarities)
      (8, ((2,), (4,), (8,)))
    """
    depth = _check_int("depth", depth, 1)
    children = _check_int("children", children, 1)
    lo, hi = _check_range(polarity_range, random_sign)
    levels = _random_polarities(key, jnp.float32(lo), jnp.float32(hi), depth=depth, children=children,
                                random_sign=random_sign)
    return HLTM(levels, depth, children)


@functools.partial(jax.jit, static_argnames=("depth", "children", "random_sign"))
def _random_polarities(key, lo, hi, *, depth: int, children: int, random_sign: bool) -> tuple[jax.Array, ...]:
    # One compiled program per tree shape, and one random draw for all edges: every threefry call adds
    # noticeably to the compile time on CPU.
    u, sign_u = jax.random.uniform(key, (2, _n_below_root(depth, children)), dtype=jnp.float32)
    rho = lo + u * (hi - lo)
    if random_sign:
        rho = jnp.where(sign_u < 0.5, rho, -rho)
    return _split_levels(jnp.clip(rho, -1.0, 1.0), depth, children)


def _n_below_root(depth: int, children: int) -> int:
    return sum(children**t for t in range(1, depth + 1))


def _split_levels(a: jax.Array, depth: int, children: int) -> tuple[jax.Array, ...]:
    """Split the last axis (all nodes below the root, level by level) into one array per level t = 1..depth."""
    bounds = np.cumsum([children**t for t in range(1, depth + 1)])[:-1].tolist()
    return tuple(jnp.split(a, bounds, axis=-1))


def _check_range(polarity_range: tuple[float, float], random_sign: bool) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in polarity_range)
    except (TypeError, ValueError):
        raise ValueError(f"polarity_range must be a pair (lo, hi) of numbers; got {polarity_range!r}") from None
    low = 0.0 if random_sign else -1.0
    if not (low <= lo <= hi <= 1.0):
        what = "|rho| (random_sign=True)" if random_sign else "rho"
        raise ValueError(f"polarity_range (lo, hi) of {what} must satisfy {low:g} <= lo <= hi <= 1 (polarities "
                         f"live in [-1, 1]); got ({lo:g}, {hi:g})")
    return lo, hi


def hltm_from_polarities(polarities: Sequence, children: int) -> HLTM:
    """A tree with given polarities: ``polarities[t - 1]`` of shape (children**t,) for t = 1..depth.

    Raises:
      ValueError: no levels, wrong level sizes, non-finite values, or a polarity outside [-1, 1].
    """
    children = _check_int("children", children, 1)
    if len(polarities) < 1:
        raise ValueError("polarities must list at least one level (depth >= 1)")
    levels = []
    for t, rho in enumerate(polarities, start=1):
        arr = np.asarray(rho, dtype=np.float64)
        if arr.shape != (children**t,):
            raise ValueError(f"level {t} must have children**{t} = {children**t} polarities; got shape {arr.shape}")
        if not np.all(np.isfinite(arr)) or np.any(np.abs(arr) > 1.0):
            bad = arr[~(np.abs(arr) <= 1.0)]
            raise ValueError(f"polarities must lie in [-1, 1]; level {t} has {bad.tolist()}")
        levels.append(jnp.asarray(rho))
    return HLTM(tuple(levels), len(levels), children)


def path_polarities(tree: HLTM) -> tuple[jax.Array, ...]:
    """rho_0mu = product of the polarities on the path root -> mu, per level t = 0..depth ((1,) ones for the root).

    This is corr(z_mu, z0) [D]; E[z_mu | z0] = (1 - rho_0mu)/2 + rho_0mu z0.
    """
    out = [jnp.ones((1,), dtype=tree.polarities[0].dtype)]
    for rho in tree.polarities:
        out.append(jnp.repeat(out[-1], tree.children) * rho)
    return tuple(out)


def sample_latents(tree: HLTM, root: jax.Array, *, key: jax.Array) -> tuple[jax.Array, ...]:
    """Sample every latent below given roots, top-down.

    Args:
      tree: the :class:`HLTM`.
      root: (N,) root values in {0, 1} (int).
      key: PRNG key.

    Returns:
      ``depth + 1`` int32 arrays, entry t of shape (N, children**t); entry 0 is ``root[:, None]``.
    """
    if jnp.ndim(root) != 1:
        raise ValueError(f"root must have shape (N,); got {jnp.shape(root)}")
    u = jax.random.uniform(key, (jnp.shape(root)[0], _n_below_root(tree.depth, tree.children)),
                           dtype=tree.polarities[0].dtype)
    return _latents_from_uniforms(tree, root, u)


def _latents_from_uniforms(tree: HLTM, root: jax.Array, u: jax.Array) -> tuple[jax.Array, ...]:
    """Top-down sampling driven by given U[0, 1) numbers u: (N, nodes below the root), one per node."""
    z = jnp.asarray(root, dtype=jnp.int32)[:, None]
    out = [z]
    for rho, u_level in zip(tree.polarities, _split_levels(u, tree.depth, tree.children)):
        flip = u_level < ((1.0 - rho) / 2.0)[None, :]
        z = jnp.repeat(z, tree.children, axis=1) ^ flip.astype(jnp.int32)
        out.append(z)
    return tuple(out)


def sample_views(tree: HLTM, n: int, *, key: jax.Array, dtype: DTypeLike = jnp.float32) -> HLTMViews:
    """n anchors with their positives (same root, all else resampled) and negatives (independent root).

    Args:
      tree: the :class:`HLTM`.
      n: number of triples (>= 1).
      key: PRNG key.
      dtype: floating dtype of the leaves.

    Returns:
      :class:`HLTMViews`.

    Example:
      >>> tree = make_hltm(2, 2, (0.9, 1.0), key=jax.random.key(0))
      >>> v = sample_views(tree, 5, key=jax.random.key(1))
      >>> v.x.shape, tuple(z.shape for z in v.latents)
      ((5, 4), ((5, 1), (5, 2), (5, 4)))
    """
    n = _check_int("n", n, 1)
    # One random draw and one top-down pass for the three views (3n independent samples); column 0 gives the
    # roots: the anchor's (rows :n, shared by the positive) and the negative's (rows 2n:).
    u = jax.random.uniform(key, (3 * n, 1 + _n_below_root(tree.depth, tree.children)),
                           dtype=tree.polarities[0].dtype)
    roots = (u[:, 0] < 0.5).astype(jnp.int32)
    lat = _latents_from_uniforms(tree, jnp.concatenate([roots[:n], roots[:n], roots[2 * n:]]), u[:, 1:])
    lat_x, lat_pos, lat_neg = (tuple(z[i * n:(i + 1) * n] for z in lat) for i in range(3))
    leaves = lambda z: z[-1].astype(dtype)
    return HLTMViews(leaves(lat_x), leaves(lat_pos), leaves(lat_neg), lat_x, lat_pos, lat_neg)


def root_population(tree: HLTM, n: int, *, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """An exact finite population of a binary-root HLTM: ``n`` leaf samples for each root value, and their means.

    Returns ``(views, clean)``: (2, n, n_leaves) leaves sampled with z0 = 0 (row 0) and z0 = 1 (row 1), and
    (2, n_leaves) E[x | z0] = (1 - rho) / 2 + rho z0 exactly (rho: the leaves' path polarities), in float64 when
    x64 is enabled (the caller's ``enable_x64``), else in float32.
    """
    views = jnp.stack([
        sample_latents(tree, jnp.full((n,), c, jnp.int32), key=jax.random.fold_in(key, c))[-1].astype(jnp.float64)
        for c in (0, 1)])
    rho = path_polarities(tree)[-1].astype(jnp.float64)
    return views, jnp.stack([(1.0 - rho) / 2.0 + rho * c for c in (0.0, 1.0)])
