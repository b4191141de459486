"""The one place for workarounds of third-party behaviour that depends on library versions.

Current entries:

- :func:`standard_dtype_promotion`: code of other libraries that mixes dtypes internally, which fails when the caller
  runs JAX with ``jax_numpy_dtype_promotion="strict"`` (our test suite does, to catch silent promotions in our own
  code). Used around:
    * dm-pix (0.4.x) ``random_saturation`` / ``random_hue``: its RGB<->HSV conversion mixes bool and float arrays;
    * Flax (0.12.x) ``nnx.GroupNorm``: computes statistics in ``promote_types(dtype, float32)``, which raises for
      float64 under strict promotion.
  The standard rules give the intended dtypes in both cases; our own code stays under the caller's setting.

- :func:`import_neural_tangents`: neural-tangents 0.6.5 (the last release, Dec 2023) on current JAX without
  TensorFlow. As released, ``import neural_tangents`` fails for two reasons:
    * its package ``__init__`` imports ``neural_tangents.experimental``, whose TensorFlow-backed NTK imports
      ``jax.experimental.jax2tf`` and so TensorFlow (a 500 MB dependency we never use): a stub module is put in
      its place (importing it explains why; nothing of it is used);
    * its ``_src/empirical.py`` and ``_src/utils/rules.py`` import names that have left ``jax.core`` (``Jaxpr``,
      ``JaxprEqn``, ``Literal``, ``Var``, ``Primitive``: now in ``jax.extend.core``), the module ``jax.util``
      (``safe_map``, ``safe_zip``: removed) and ``jax.interpreters.ad.zeros_like_p`` (removed). While
      neural-tangents is being imported, and only then, the missing ``jax.core`` names are aliased to their
      ``jax.extend.core`` versions, a stand-in ``jax.util`` with our own ``safe_map`` / ``safe_zip`` (``map`` /
      ``zip`` that insist on equal lengths) is installed, and ``zeros_like_p`` is a placeholder primitive that
      only serves as a key of neural-tangents' structured-derivative rule table. Everything is restored after the
      import (neural-tangents keeps the names it bound), so no other library sees a modified JAX.
  What this gives and what it does not (probed by :func:`nt_working_implementations`, tested in
  ``tests/test_compat.py``): ``empirical_ntk_fn`` with ``JACOBIAN_CONTRACTION`` and ``NTK_VECTOR_PRODUCTS`` and
  the ``stax`` infinite-width kernels work; ``STRUCTURED_DERIVATIVES`` (which rewrites jaxprs with JAX's internal
  transpose rules) fails on current JAX, and so does neural-tangents' ``AUTO``, which tries all three:
  :mod:`stepwise.ntk` never selects either.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import types
import warnings
from collections.abc import Callable, Iterator

import jax

__all__ = [
    "MIN_JAX",
    "NT_IMPLEMENTATIONS",
    "TESTED_JAX",
    "UntestedJaxWarning",
    "check_jax_version",
    "import_neural_tangents",
    "nt_empirical_ntk_fn",
    "nt_unavailable_reason",
    "nt_working_implementations",
    "standard_dtype_promotion",
]

# JAX versions: the oldest supported (pyproject.toml's lower bound) and every minor release the compatibility
# matrix (`make test-compat`, docs/compat.json) has run. Older JAX is refused; a JAX newer than the newest tested
# minor is not refused: a warning says so once, the implementation probe runs, and what works is used.
MIN_JAX = (0, 6)
TESTED_JAX = ("0.6.2", "0.7.2", "0.8.3", "0.9.2", "0.10.2", "0.11.2", "0.12.0.1")
NT_VERSION = "0.6.5"
# neural-tangents' NtkImplementation members by the names stepwise uses.
NT_IMPLEMENTATIONS = {
    "jacobian_contraction": "JACOBIAN_CONTRACTION",
    "ntk_vector_products": "NTK_VECTOR_PRODUCTS",
    "structured_derivatives": "STRUCTURED_DERIVATIVES",
}


@contextlib.contextmanager
def standard_dtype_promotion() -> Iterator[None]:
    """Run a third-party call under JAX's standard dtype promotion, whatever the caller's setting."""
    with jax.numpy_dtype_promotion("standard"):
        yield


# ----------------------------------------------------------------------------------------------------------------
# neural-tangents 0.6.5 on current JAX, without TensorFlow.


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".")[:2] if part.isdigit())


def _jax_version() -> tuple[int, ...]:
    return _version_tuple(jax.__version__)


class UntestedJaxWarning(UserWarning):
    """The JAX in use is newer than every version stepwise's compatibility matrix has tested."""


_warned_untested: set[str] = set()


def check_jax_version() -> None:
    """Refuse a JAX older than :data:`MIN_JAX`; warn once (:class:`UntestedJaxWarning`) for one newer than tested.

    Raises:
      ImportError: JAX older than :data:`MIN_JAX` (the message says which versions are supported).
    """
    version = _jax_version()
    if version < MIN_JAX:
        raise ImportError(
            f"stepwise needs jax>={MIN_JAX[0]}.{MIN_JAX[1]} (tested: {', '.join(TESTED_JAX)}), but jax "
            f"{jax.__version__} is installed: `pip install -U jax`"
        )
    newest = max(_version_tuple(v) for v in TESTED_JAX)
    if version > newest and jax.__version__ not in _warned_untested:
        _warned_untested.add(jax.__version__)
        warnings.warn(
            f"jax {jax.__version__} is newer than every version stepwise has tested (newest: {TESTED_JAX[-1]}); "
            f"neural-tangents' implementations are probed and only those that compute the right kernel are used "
            f"(stepwise.ntk falls back to its own Jacobian contraction if none does)",
            UntestedJaxWarning, stacklevel=3,
        )


def _safe_map(f: Callable, *iterables):
    lists = [list(it) for it in iterables]
    if len({len(x) for x in lists}) > 1:
        raise ValueError(f"safe_map: lengths differ: {[len(x) for x in lists]}")
    return list(map(f, *lists))


def _safe_zip(*iterables):
    lists = [list(it) for it in iterables]
    if len({len(x) for x in lists}) > 1:
        raise ValueError(f"safe_zip: lengths differ: {[len(x) for x in lists]}")
    return list(zip(*lists))


def _experimental_stub() -> types.ModuleType:
    stub = types.ModuleType("neural_tangents.experimental")
    stub.__doc__ = "Placeholder installed by stepwise._compat: the real module needs TensorFlow."

    def __getattr__(name):
        raise ImportError(
            f"neural_tangents.experimental.{name} needs TensorFlow, which stepwise does not install; "
            f"stepwise.ntk uses neural-tangents' JAX implementations only"
        )

    stub.__getattr__ = __getattr__  # type: ignore[attr-defined]
    return stub


@contextlib.contextmanager
def _nt_import_shims() -> Iterator[None]:
    """Temporarily gives JAX the names neural-tangents 0.6.5 imports (see the module docstring)."""
    import jax.core
    import jax.extend.core
    import jax.interpreters.ad

    restore: list[Callable[[], None]] = []

    def alias(module, name, value):
        if name not in vars(module):
            setattr(module, name, value)
            restore.append(lambda: delattr(module, name))

    try:
        for name in ("Jaxpr", "JaxprEqn", "Literal", "Var", "Primitive"):
            alias(jax.core, name, getattr(jax.extend.core, name))
        alias(jax.interpreters.ad, "zeros_like_p", jax.extend.core.Primitive("zeros_like"))
        if "jax.util" not in sys.modules:
            try:
                import jax.util  # noqa: F401  (older JAX still has it)
            except ImportError:
                util = types.ModuleType("jax.util")
                util.safe_map, util.safe_zip = _safe_map, _safe_zip
                sys.modules["jax.util"] = util
                restore.append(lambda: sys.modules.pop("jax.util", None))
        sys.modules.setdefault("neural_tangents.experimental", _experimental_stub())
        yield
    finally:
        for undo in reversed(restore):
            undo()


def import_neural_tangents() -> types.ModuleType:
    """``import neural_tangents`` (0.6.5) on the JAX in use, without TensorFlow.

    Raises:
      ImportError: JAX older than :data:`MIN_JAX`, or neural-tangents missing (the message gives the install
        command: ``make install`` installs it without its TensorFlow requirement), or its import failing on this
        JAX (the message says what failed and that the ``"jax"`` NTK backend works without it).
    """
    check_jax_version()
    if "neural_tangents" in sys.modules and "neural_tangents.stax" in sys.modules:
        return sys.modules["neural_tangents"]
    try:
        # On JAX 0.6 the names still exist behind deprecation warnings ("safe_map was deprecated in JAX v0.6.0"):
        # neural-tangents' own imports of them are not ours to fix, so those warnings are silenced for this import.
        with _nt_import_shims(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import neural_tangents
    except ModuleNotFoundError as err:
        if err.name not in (None, "neural_tangents"):
            raise
        raise ImportError(
            f"neural-tangents is not installed: `make install`, or `{sys.executable} -m pip install --no-deps "
            f"neural-tangents=={NT_VERSION} frozendict` (without --no-deps pip would install TensorFlow)"
        ) from err
    except Exception as err:  # noqa: BLE001 - a JAX newer than the shim knows may break the import in any way
        for name in [m for m in sys.modules if m == "neural_tangents" or m.startswith("neural_tangents.")]:
            del sys.modules[name]  # no half-imported package left behind
        raise ImportError(
            f"neural-tangents {NT_VERSION} does not import on jax {jax.__version__} through stepwise's shim "
            f"({type(err).__name__}: {err}); stepwise.ntk.empirical_ntk works without it (backend='jax', or "
            f"backend='auto', which falls back to it); infinite-width (stax) kernels need a JAX listed in "
            f"stepwise._compat.TESTED_JAX"
        ) from err
    return neural_tangents


def nt_unavailable_reason() -> str | None:
    """None if neural-tangents imports and at least one of its NTK implementations works, else why not."""
    try:
        import_neural_tangents()
    except ImportError as err:
        return str(err)
    if not nt_working_implementations():
        return (f"no neural-tangents NTK implementation computes the right kernel on jax {jax.__version__} "
                f"(stepwise._compat.nt_working_implementations probes them)")
    return None


def nt_empirical_ntk_fn(apply_fn: Callable, implementation: str) -> Callable:
    """``neural_tangents.empirical_ntk_fn`` for a per-example ``apply_fn(params, x) -> (N, d)``, averaged over d.

    Returns ``ntk(x1, x2, params) -> (n1, n2)`` (``trace_axes=(-1,)``: the trace over the output axis divided by
    its size; ``vmap_axes=0``: examples are independent, which makes the Jacobians per example).
    """
    nt = import_neural_tangents()
    if implementation not in NT_IMPLEMENTATIONS:
        raise ValueError(f"unknown neural-tangents implementation {implementation!r}; one of {list(NT_IMPLEMENTATIONS)}")
    member = getattr(nt.NtkImplementation, NT_IMPLEMENTATIONS[implementation])
    fn = nt.empirical_ntk_fn(apply_fn, trace_axes=(-1,), vmap_axes=0, implementation=member)

    def ntk(x1, x2, params):
        # NTK_VECTOR_PRODUCTS calls jnp.size on a jax.ShapeDtypeStruct, deprecated in JAX 0.10 ("In a future JAX
        # release this will be an error"). Only that warning is silenced, and only inside neural-tangents' call; its internal dtype mixing gets the standard rules.
        with warnings.catch_warnings(), standard_dtype_promotion():
            warnings.filterwarnings("ignore", message="size requires ndarray or scalar arguments",
                                    category=DeprecationWarning)
            return fn(x1, x2, params)

    return ntk


@functools.cache
def nt_working_implementations() -> tuple[str, ...]:
    """The neural-tangents NTK implementations that compute the right kernel with the JAX in use, probed once.

    Each implementation computes the NTK of a tiny two-layer tanh network on 3 x 2 inputs; it works if that
    neither raises nor differs from the Jacobian contraction computed directly with ``jax.jacrev`` by more than
    1e-5 relative. ``structured_derivatives`` is probed like the others but never returned: it fails on JAX >= 0.7
    and stepwise never selects it even where the probe passes.
    """
    import jax.numpy as jnp

    key1, key2, key3 = jax.random.split(jax.random.key(0), 3)
    params = {"w1": jax.random.normal(key1, (2, 5)), "w2": jax.random.normal(key2, (5, 3))}
    x = jax.random.normal(key3, (3, 2))

    def f(p, x):
        return jnp.tanh(x @ p["w1"]) @ p["w2"]

    jac = jax.vmap(jax.jacrev(lambda p, xi: f(p, xi[None])[0]), in_axes=(None, 0))(params, x)
    flat = jnp.concatenate([leaf.reshape(3, -1) for leaf in jax.tree.leaves(jac)], axis=1)
    expected = flat @ flat.T / 3
    working = []
    for name in NT_IMPLEMENTATIONS:
        try:
            got = nt_empirical_ntk_fn(f, name)(x, None, params)
            ok = bool(jnp.max(jnp.abs(got - expected)) <= 1e-5 * jnp.max(jnp.abs(expected)))
        except Exception:  # noqa: BLE001 - any failure means "does not work here"
            ok = False
        if ok and name != "structured_derivatives":
            working.append(name)
    return tuple(working)
