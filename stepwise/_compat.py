"""The one place for workarounds of third-party behaviour that depends on library versions.

Current entries:

- :func:`standard_dtype_promotion`: code of other libraries that mixes dtypes internally, which fails when the caller
  runs JAX with ``jax_numpy_dtype_promotion="strict"`` (our test suite does, to catch silent promotions in our own
  code). Used around:
    * dm-pix (0.4.x) ``random_saturation`` / ``random_hue``: its RGB<->HSV conversion mixes bool and float arrays;
    * Flax (0.12.x) ``nnx.GroupNorm``: computes statistics in ``promote_types(dtype, float32)``, which raises for
      float64 under strict promotion.
  The standard rules give the intended dtypes in both cases; our own code stays under the caller's setting.

- :func:`enable_x64`: the context manager that turns on 64-bit types for a block is ``jax.enable_x64`` from JAX 0.8
  on; JAX 0.6-0.7 only have ``jax.experimental.enable_x64`` (deprecated with a warning in 0.8, removed in 0.9).

- :func:`import_neural_tangents`: neural-tangents 0.6.5 (the last release, Dec 2023) on current JAX without
  TensorFlow. As released, ``import neural_tangents`` fails for two reasons:
    * its package ``__init__`` imports ``neural_tangents.experimental``, whose TensorFlow-backed NTK imports
      ``jax.experimental.jax2tf`` and so TensorFlow (a 500 MB dependency we never use): a stub module is put in
      its place (importing it explains why; nothing of it is used);
    * its ``_src/empirical.py`` and ``_src/utils/rules.py`` import names that have left ``jax.core`` (``Jaxpr``,
      ``JaxprEqn``, ``Literal``, ``Var``, ``Primitive``: now in ``jax.extend.core``), ``safe_map`` /
      ``safe_zip`` from ``jax.util`` (gone from it in JAX 0.7, the module itself later) and
      ``jax.interpreters.ad.zeros_like_p`` (removed). While neural-tangents is being imported, and only then,
      the missing ``jax.core`` names are aliased to their ``jax.extend.core`` versions, our own ``safe_map`` /
      ``safe_zip`` (``map`` / ``zip`` that insist on equal lengths) are put into ``jax.util`` (into a stand-in
      module where it no longer exists), and ``zeros_like_p`` is a placeholder primitive that
      only serves as a key of neural-tangents' structured-derivative rule table. Everything is restored after the
      import (neural-tangents keeps the names it bound), so no other library sees a modified JAX.
  Any failure of that import (a JAX that moved another name, a missing dependency) becomes one ``ImportError``
  that says what failed and what works without neural-tangents.

  After the import, what a user of neural-tangents reaches and that current JAX / SciPy broke is repaired by
  replacing attributes of neural-tangents' own modules (never of JAX or SciPy), once (:func:`_repair_nt`); each
  repair is tested in ``tests/test_compat.py`` against an independent reference:
    * ``NtkImplementation.AUTO`` picks the implementation with the fewest FLOPs from
      ``jax.jit(f).lower(...).compile().cost_analysis()``, which is a dict in current JAX (a list of dicts when
      0.6.5 was released): ``KeyError: 0`` in ``empirical._get_flops``. Replaced by a ``_get_flops`` that reads
      either form; an implementation that is refused here (below) counts as infinitely expensive, so AUTO chooses
      between ``JACOBIAN_CONTRACTION`` and ``NTK_VECTOR_PRODUCTS``. (AUTO still prints each candidate's FLOPs,
      as neural-tangents does.)
    * ``NtkImplementation.STRUCTURED_DERIVATIVES`` rewrites jaxprs with JAX internals; on JAX >= 0.7 it calls
      ``jax.interpreters.ad.linearize`` with an old signature (``TypeError: linearize() got multiple values for
      argument 'has_aux'``), and adapting it would mean maintaining a port of JAX's transpose rules. Not
      repairable here: it is probed once (:func:`nt_structured_derivatives_work`, the same check as the other
      implementations) and, where the probe fails, the kernel function it returns raises ``NotImplementedError``
      saying so and naming the implementations that work. :mod:`stepwise.ntk` never selects it.
    * ``NTK_VECTOR_PRODUCTS`` calls ``jnp.size`` on ``jax.ShapeDtypeStruct`` leaves (``_std_basis``,
      ``_unravel_array_into_pytree``), deprecated in JAX 0.10 ("In a future JAX release this will be an error"):
      both are replaced by the same functions with the size taken from the shape.
    * ``predict.max_learning_rate`` calls ``scipy.linalg.eigvalsh(..., eigvals=(lo, hi))``; SciPy 1.14 removed
      ``eigvals`` (its replacement, ``subset_by_index=[lo, hi]``, exists since SciPy 1.5). The name ``sp`` in
      ``neural_tangents._src.predict`` (used only there) is replaced by a namespace whose ``linalg.eigvalsh``
      passes ``eigvals`` on as ``subset_by_index``.
    * ``predict.gradient_descent_mse`` computes its Cholesky / eigendecomposition under
      ``jax.core.eval_context()`` so that the cached factors are concrete when the returned ``predict_fn`` is
      traced. Since JAX's tracing became stackless (0.4.36) that context refuses tracers, so building the
      predictor inside ``jit`` / ``vmap`` (``k_train_train`` traced) raises ``UnexpectedTracerError``. The name
      ``jax`` in ``neural_tangents._src.predict`` is replaced by a view of ``jax`` whose ``core.eval_context`` is
      the public ``jax.ensure_compile_time_eval``: concrete inputs are still evaluated eagerly (and cached
      concrete), traced ones are traced.
  What works (probed by :func:`nt_working_implementations`, tested in ``tests/test_compat.py``; neural-tangents'
  own tests are run against this shim by ``make test-nt``, results in ``docs/compat.json``): ``empirical_ntk_fn``
  and friends with ``JACOBIAN_CONTRACTION``, ``NTK_VECTOR_PRODUCTS`` and ``AUTO``, ``linearize``,
  ``taylor_expand``, ``batch``, ``monte_carlo_kernel_fn``, ``predict`` and the ``stax`` infinite-width kernels.
"""

from __future__ import annotations

import contextlib
import functools
import math
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
    "NtImplementationRefused",
    "check_jax_version",
    "enable_x64",
    "import_neural_tangents",
    "nt_empirical_ntk_fn",
    "nt_structured_derivatives_work",
    "nt_unavailable_reason",
    "nt_working_implementations",
    "standard_dtype_promotion",
]

# JAX versions: the oldest supported (pyproject.toml's lower bound) and every minor release the compatibility
# matrix (`make test-compat`, docs/compat.json) has run. Older JAX is refused; a JAX newer than the newest tested
# minor is not refused: a warning says so once, the implementation probe runs, and what works is used.
MIN_JAX = (0, 7)  # pyproject: jax>=0.7.2 (flax 0.12 needs jax>=0.7.1; diffrax's equinox excludes 0.7.0 and 0.7.1)
TESTED_JAX = ("0.7.2", "0.8.3", "0.9.2", "0.10.2", "0.11.2", "0.12.0.1")
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


def enable_x64(enabled: bool = True) -> contextlib.AbstractContextManager[None]:
    """Context manager: 64-bit JAX types on (or off) for a block, whatever the global ``jax_enable_x64`` says.

    ``jax.enable_x64`` where it exists (JAX >= 0.8), else ``jax.experimental.enable_x64`` (JAX 0.6-0.7). Use it
    around eager code only: a trace entered under one setting must not be continued under the other.
    """
    manager = getattr(jax, "enable_x64", None)
    if manager is None:  # JAX 0.6-0.7
        from jax.experimental import enable_x64 as manager
    return manager(enabled)


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
        util = sys.modules.get("jax.util")
        if util is None:
            try:
                import jax.util as util  # JAX 0.7-0.8 still have the module, without safe_map / safe_zip
            except ImportError:
                util = sys.modules["jax.util"] = types.ModuleType("jax.util")
                restore.append(lambda: sys.modules.pop("jax.util", None))
        alias(util, "safe_map", _safe_map)
        alias(util, "safe_zip", _safe_zip)
        sys.modules.setdefault("neural_tangents.experimental", _experimental_stub())
        yield
    finally:
        for undo in reversed(restore):
            undo()


def import_neural_tangents() -> types.ModuleType:
    """``import neural_tangents`` (0.6.5) on the JAX in use, without TensorFlow, with the repairs applied.

    See the module docstring for what is shimmed during the import and repaired after it.

    Raises:
      ImportError: JAX older than :data:`MIN_JAX`, or neural-tangents missing (the message gives the install
        command: ``make install`` installs it without its TensorFlow requirement), or its import failing on this
        JAX for any reason (the message says what failed and that the ``"jax"`` NTK backend works without it).
    """
    check_jax_version()
    nt = sys.modules.get("neural_tangents")
    if nt is not None and getattr(nt, "_stepwise_repaired", False):
        return nt
    try:
        # Names JAX deprecated before removing them warn when imported ("safe_map was deprecated in JAX v0.6.0"):
        # neural-tangents' own imports of them are not ours to fix, so those warnings are silenced for this import.
        with _nt_import_shims(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import neural_tangents as nt
            import neural_tangents.predict  # noqa: F401  (the repairs patch its modules)
            import neural_tangents.stax  # noqa: F401
        _repair_nt(nt)
    except Exception as err:  # noqa: BLE001 - a JAX newer than the shim knows may break the import in any way
        for name in [m for m in sys.modules if m == "neural_tangents" or m.startswith("neural_tangents.")]:
            del sys.modules[name]  # no half-imported package left behind
        if isinstance(err, ModuleNotFoundError) and err.name == "neural_tangents":
            raise ImportError(
                f"neural-tangents is not installed: `make install`, or `{sys.executable} -m pip install --no-deps "
                f"neural-tangents=={NT_VERSION} frozendict` (without --no-deps pip would install TensorFlow)"
            ) from err
        raise ImportError(
            f"neural-tangents {NT_VERSION} does not import on jax {jax.__version__} through stepwise's shim "
            f"({type(err).__name__}: {err}); stepwise.ntk.empirical_ntk works without it (backend='jax', or "
            f"backend='auto', which falls back to it); infinite-width (stax) kernels need neural-tangents: "
            f"a JAX listed in stepwise._compat.TESTED_JAX imports it"
        ) from err
    return nt


# -- repairs applied after the import (each one is described in the module docstring) --------------------------


class NtImplementationRefused(NotImplementedError):
    """A neural-tangents NTK implementation that does not work with the JAX in use was asked for."""


def _nt_get_flops(f: Callable, optimize: bool, *args, **kwargs) -> float:
    """neural-tangents' ``empirical._get_flops`` for a ``cost_analysis()`` that is a dict (or a list of dicts)."""
    import numpy as np

    try:
        lowered = jax.jit(f).lower(*args, **kwargs)
    except NtImplementationRefused:
        return float(np.inf)  # AUTO then chooses among the implementations that work
    analysis = lowered.compile().cost_analysis() if optimize else lowered.cost_analysis()
    if isinstance(analysis, (list, tuple)):  # jax < 0.4.30 returned one dict per device program
        analysis = analysis[0]
    return float(analysis.get("flops", 0.0))  # XLA leaves out zero counts (e.g. a program of only transcendentals)


def _nt_std_basis(pytree):
    """neural-tangents' ``empirical._std_basis`` with sizes from shapes (its leaves may be ShapeDtypeStructs)."""
    import jax.numpy as jnp

    leaves = jax.tree.leaves(pytree)
    flat_basis = jnp.eye(sum(math.prod(jnp.shape(leaf)) for leaf in leaves), dtype=jax.dtypes.result_type(*leaves))
    return _nt_unravel_array_into_pytree(pytree, 1, flat_basis)


def _nt_unravel_array_into_pytree(pytree, axis: int, arr):
    """neural-tangents' ``empirical._unravel_array_into_pytree`` with sizes from shapes."""
    import jax.numpy as jnp
    import numpy as np

    leaves, treedef = jax.tree.flatten(pytree)
    if arr.ndim > 0:
        axis %= arr.ndim
    shapes = [arr.shape[:axis] + jnp.shape(leaf) + arr.shape[axis + 1:] for leaf in leaves]
    parts = jnp.split(arr, np.cumsum([math.prod(jnp.shape(leaf)) for leaf in leaves[:-1]]).tolist(), axis)
    return jax.tree.unflatten(treedef, [jnp.reshape(x, shape) for x, shape in zip(parts, shapes, strict=True)])


def _eigvalsh_with_eigvals(a, *args, eigvals=None, **kwargs):
    """``scipy.linalg.eigvalsh`` that also takes the ``eigvals=(lo, hi)`` SciPy < 1.14 had."""
    import scipy.linalg

    if eigvals is not None:
        kwargs["subset_by_index"] = list(eigvals)
    return scipy.linalg.eigvalsh(a, *args, **kwargs)


class _JaxWithCompileTimeEval(types.ModuleType):
    """A view of ``jax`` for neural-tangents' ``predict`` whose ``core.eval_context`` is
    ``ensure_compile_time_eval``."""

    def __init__(self) -> None:
        super().__init__("jax")
        self.core = types.SimpleNamespace(eval_context=jax.ensure_compile_time_eval)

    def __getattr__(self, name: str):
        return getattr(jax, name)


def _nt_refuse_structured_derivatives(original: Callable) -> Callable:
    def structured_derivatives_ntk_fn(**kwargs) -> Callable:
        ntk_fn = original(**kwargs)

        @functools.wraps(ntk_fn)
        def checked(*args, **apply_fn_kwargs):
            if not nt_structured_derivatives_work():
                raise NtImplementationRefused(
                    f"neural-tangents' STRUCTURED_DERIVATIVES implementation does not work with jax "
                    f"{jax.__version__} (it rewrites jaxprs with JAX internals whose signatures have changed; "
                    f"see stepwise._compat): use JACOBIAN_CONTRACTION, NTK_VECTOR_PRODUCTS or AUTO, which "
                    f"compute the same kernel"
                )
            return ntk_fn(*args, **apply_fn_kwargs)

        return checked

    structured_derivatives_ntk_fn.original = original  # type: ignore[attr-defined]
    return structured_derivatives_ntk_fn


def _repair_nt(nt: types.ModuleType) -> None:
    """Apply the repairs listed in the module docstring to neural-tangents' modules (once)."""
    from neural_tangents._src import empirical
    from neural_tangents._src import predict as predict_src

    if getattr(nt, "_stepwise_repaired", False):
        return
    empirical._get_flops = _nt_get_flops
    empirical._std_basis = _nt_std_basis
    empirical._unravel_array_into_pytree = _nt_unravel_array_into_pytree
    table = empirical._implementation_to_ntk_fn
    sd = empirical.NtkImplementation.STRUCTURED_DERIVATIVES
    table[sd] = _nt_refuse_structured_derivatives(table[sd])
    predict_src.sp = types.SimpleNamespace(linalg=types.SimpleNamespace(eigvalsh=_eigvalsh_with_eigvals))
    predict_src.jax = _JaxWithCompileTimeEval()
    nt._stepwise_repaired = True


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
    its size; ``vmap_axes=0``: examples are independent, which makes the Jacobians per example). neural-tangents'
    internal dtype mixing gets JAX's standard promotion rules whatever the caller's setting.

    Raises:
      ValueError: ``implementation`` is not ``"jacobian_contraction"`` or ``"ntk_vector_products"``
        (``"structured_derivatives"`` is refused with the reason: see the module docstring).
    """
    nt = import_neural_tangents()
    if implementation == "structured_derivatives":
        raise ValueError(
            "neural-tangents' 'structured_derivatives' implementation is not used by stepwise (it rewrites jaxprs "
            "with JAX internals that have changed and fails on JAX >= 0.7; see stepwise._compat): "
            "use 'jacobian_contraction' or 'ntk_vector_products'"
        )
    if implementation not in NT_IMPLEMENTATIONS:
        raise ValueError(f"unknown neural-tangents implementation {implementation!r}; one of "
                         f"{[name for name in NT_IMPLEMENTATIONS if name != 'structured_derivatives']}")
    return _nt_ntk_fn(nt, apply_fn, NT_IMPLEMENTATIONS[implementation])


def _nt_ntk_fn(nt: types.ModuleType, apply_fn: Callable, member: str, original: bool = False) -> Callable:
    if original:  # structured derivatives as released, bypassing the refusal (for the probe)
        from neural_tangents._src import empirical

        build = empirical._implementation_to_ntk_fn[empirical.NtkImplementation[member]].original
        fn = build(f=apply_fn, trace_axes=(-1,), diagonal_axes=(), vmap_axes=0, _j_rules=True, _s_rules=True,
                   _fwd=None)
    else:
        fn = nt.empirical_ntk_fn(apply_fn, trace_axes=(-1,), vmap_axes=0,
                                 implementation=getattr(nt.NtkImplementation, member))

    def ntk(x1, x2, params):
        with standard_dtype_promotion():
            return fn(x1, x2, params)

    return ntk


def _probe(ntk_of: Callable[[Callable], Callable]) -> bool:
    """Whether ``ntk_of(f)`` computes the NTK of a tiny two-layer tanh network on 3 x 2 inputs.

    The reference is the Jacobian contraction computed directly with ``jax.jacrev``; the check passes if nothing
    raises and the two differ by at most 1e-5 relative (float32 round-off on 15-term sums is ~1e-7). Evaluated at
    trace time if called under a transformation (``jax.ensure_compile_time_eval``).
    """
    import jax.numpy as jnp

    with jax.ensure_compile_time_eval():
        key1, key2, key3 = jax.random.split(jax.random.key(0), 3)
        params = {"w1": jax.random.normal(key1, (2, 5)), "w2": jax.random.normal(key2, (5, 3))}
        x = jax.random.normal(key3, (3, 2))

        def f(p, x):
            return jnp.tanh(x @ p["w1"]) @ p["w2"]

        jac = jax.vmap(jax.jacrev(lambda p, xi: f(p, xi[None])[0]), in_axes=(None, 0))(params, x)
        flat = jnp.concatenate([leaf.reshape(3, -1) for leaf in jax.tree.leaves(jac)], axis=1)
        expected = flat @ flat.T / 3
        try:
            got = ntk_of(f)(x, None, params)
            return bool(jnp.max(jnp.abs(got - expected)) <= 1e-5 * jnp.max(jnp.abs(expected)))
        except Exception:  # noqa: BLE001 - any failure means "does not work here"
            return False


@functools.cache
def nt_working_implementations() -> tuple[str, ...]:
    """The neural-tangents NTK implementations stepwise may use that compute the right kernel here, probed once.

    ``"jacobian_contraction"`` and ``"ntk_vector_products"``, each kept if it computes the NTK of a tiny network
    like ``jax.jacrev`` does (see :func:`_probe`). ``"structured_derivatives"`` is never among them (see
    :func:`nt_structured_derivatives_work`).
    """
    nt = import_neural_tangents()
    return tuple(name for name, member in NT_IMPLEMENTATIONS.items()
                 if name != "structured_derivatives" and _probe(lambda f, m=member: _nt_ntk_fn(nt, f, m)))


@functools.cache
def nt_structured_derivatives_work() -> bool:
    """Whether neural-tangents' STRUCTURED_DERIVATIVES, as released, computes the right kernel here (probed once).

    False on JAX >= 0.7; where it is False, asking neural-tangents for that implementation raises
    :class:`NtImplementationRefused` (a ``NotImplementedError``) with the reason.
    """
    nt = import_neural_tangents()
    with warnings.catch_warnings():  # its use of lu.wrap_init without debug info warns before it fails
        warnings.simplefilter("ignore", DeprecationWarning)
        return _probe(lambda f: _nt_ntk_fn(nt, f, "STRUCTURED_DERIVATIVES", original=True))
