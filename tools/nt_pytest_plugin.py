"""pytest plugin for running neural-tangents 0.6.5's own tests against stepwise's shim (``make test-nt``).

Loaded by ``tools/nt_suite.py`` (``-p nt_pytest_plugin``) in the pytest process that runs one of neural-tangents'
test files; nothing here is imported by stepwise or by stepwise's own tests. What it changes, in that process only:

1. neural-tangents is imported through :func:`stepwise._compat.import_neural_tangents` before any test module
   imports it, so the tests exercise neural-tangents exactly as a stepwise user gets it (shimmed and repaired).
2. The test files themselves (not neural-tangents) use JAX names that JAX has since removed: ``jax.tree_map``
   (``from jax import tree_map``, ``jax.tree_map(...)`` in ``tests/test_utils.py``) and ``jax.core.Primitive``.
   They are aliased to ``jax.tree.map`` / ``jax.extend.core.Primitive`` for this process.
3. Where neural-tangents' STRUCTURED_DERIVATIVES implementation is refused (its probe fails: JAX >= 0.7, see
   ``stepwise._compat``):
   * ``StructuredDerivativesTest`` (whose subject is that implementation) is skipped, with the reason;
   * the suite's loops ``for i in nt.NtkImplementation`` (``empirical_test.py``: every implementation against
     every other and against ``JACOBIAN_CONTRACTION``) run over AUTO, JACOBIAN_CONTRACTION and
     NTK_VECTOR_PRODUCTS: each test module sees a view of ``nt`` whose ``NtkImplementation`` iterates over those;
     its members are unchanged;
   * ``_DEFAULT_TESTING_NTK_IMPLEMENTATION``, the implementation the stax / batching tests use for the empirical
     kernels they compare with the analytic ones (STRUCTURED_DERIVATIVES as released), is JACOBIAN_CONTRACTION
     (neural-tangents' own default, ``DEFAULT_NTK_IMPLEMENTATION``).
   Where the probe passes (on no supported JAX so far: it fails from JAX 0.7 on), none of the three applies.
4. ``FlaxOtherTest`` (Flax MLP, autoencoder, VAE, ResNet-18, MLP-Mixer) and ``FlaxCnnTest`` (grouped
   convolutions), which neural-tangents skips on CPU for speed (``test_utils.skip_test``), run: they are the cases
   closest to stepwise's own use (Flax networks through ``empirical_ntk_fn``). Every other skip is the suite's own.
"""

from __future__ import annotations

import types

import jax
import jax.core
import jax.extend.core
import pytest

from stepwise._compat import import_neural_tangents, nt_structured_derivatives_work

nt = import_neural_tangents()

if not hasattr(jax, "tree_map"):
    jax.tree_map = jax.tree.map
if "Primitive" not in vars(jax.core):
    jax.core.Primitive = jax.extend.core.Primitive

SD_REFUSED = not nt_structured_derivatives_work()
SD_REASON = (f"tests neural-tangents' STRUCTURED_DERIVATIVES implementation, which stepwise's shim refuses on jax "
             f"{jax.__version__} (it fails there: stepwise._compat)")
SKIPPED_CLASSES = ("StructuredDerivativesTest",)
RUN_ON_CPU = ("FlaxOtherTest", "FlaxCnnTest")  # skipped by neural-tangents on CPU for speed only


class _Implementations:
    """``nt.NtkImplementation`` with iteration restricted to the implementations that work; members unchanged."""

    def __init__(self, enum):
        self._enum = enum
        self._members = tuple(m for m in enum if m != enum.STRUCTURED_DERIVATIVES)

    def __iter__(self):
        return iter(self._members)

    def __len__(self):
        return len(self._members)

    def __getattr__(self, name):
        return getattr(self._enum, name)

    def __getitem__(self, name):
        return self._enum[name]

    def __call__(self, value):
        return self._enum(value)


class _NtView(types.ModuleType):
    def __init__(self, module):
        super().__init__(module.__name__)
        self._module = module
        self.NtkImplementation = _Implementations(module.NtkImplementation)

    def __getattr__(self, name):
        return getattr(self._module, name)


if SD_REFUSED:
    from neural_tangents._src import empirical

    empirical._DEFAULT_TESTING_NTK_IMPLEMENTATION = empirical.NtkImplementation.JACOBIAN_CONTRACTION
    _VIEW = _NtView(nt)


def pytest_collection_modifyitems(config, items):
    if not SD_REFUSED:
        return
    for item in items:
        if item.cls is not None and item.cls.__name__ in SKIPPED_CLASSES:
            item.add_marker(pytest.mark.skip(reason=SD_REASON))


@pytest.fixture(autouse=True)
def _supported_implementations(request, monkeypatch):
    if SD_REFUSED and getattr(request.module, "nt", None) is nt:
        monkeypatch.setattr(request.module, "nt", _VIEW)
    test_utils = getattr(request.module, "test_utils", None)
    if request.cls is not None and request.cls.__name__ in RUN_ON_CPU and test_utils is not None:
        skip_test = test_utils.skip_test

        def skip_unless_speed_on_cpu(self, msg="Skipping large tests for speed.", platforms=("cpu",)):
            if tuple(platforms) != ("cpu",):  # a skip for another reason (a known bug on some platforms): kept
                skip_test(self, msg, platforms)

        monkeypatch.setattr(test_utils, "skip_test", skip_unless_speed_on_cpu)
    yield


def pytest_report_header(config):
    return [f"neural-tangents {nt.__version__} from {nt.__file__} through stepwise._compat "
            f"(jax {jax.__version__}; STRUCTURED_DERIVATIVES {'refused' if SD_REFUSED else 'works'})"]
