"""Configuration of the linear Barlow Twins experiment (Simon et al. 2023, Fig. 1A/B).

Command:   make fig-linear      (both embedded datasets; or `stepwise run linear_bt --data.dataset digits --out DIR`)
Runtime:   about 15 s per dataset on a 2-core CPU, JAX compilation included (measured by `make bench`).
Verdict:   all checks pass on `patches` and `digits`: step-time errors well under 2% (median) and 5% (max),
           loss plateaus within 0.1 of d - k, final row space within 1e-2 rad of the top-d eigenvectors.

Values the paper does not state (theory note, section 4 E1: [U]) are parameters here and are written to
results.json: the pixel preprocessing, the initial scale, the learning rate and the number of steps.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from stepwise.data import PairData
from stepwise.errors import bound_errors, config_value_errors, raise_config_errors

# init_scale's range. lambda_j(0) ~ init_scale^2 must start below 1, the value every mode is learned to (at or above
# it there is no step to time: measured at 0.5 and 1, every step time is nan; at 3 GD diverges), and must stay a
# normal float64 with room for gamma_j and the Gram-Schmidt factors (init_scale 1e-160 makes the predicted step
# count nan).
INIT_SCALE_RANGE = (1e-100, 1.0)


@dataclasses.dataclass(frozen=True)
class LinearBTConfig:
    """Linear model f(x) = W x trained by full-batch GD on ||W Gamma W^T - I||_F^2 over fixed positive pairs.

    Attributes:
      data: the fixed pairs (:class:`stepwise.data.PairData`): each of ``n_pairs`` images (paper: 500) gives one pair
        of random crops for the whole run (paper: crop 20 on 32x32 CIFAR-10; None = the linear row of
        ``DEFAULT_CROP``), ``n_test`` held-out images (0 or >= 2) the test-set Gram check.
      d: embedding dimension.
      init_scale: std of the entries of W(0) in units of 1/sqrt(gamma_1), so lambda_j(0) ~ init_scale^2.
        Small values make steps sharp and the final subspace exact (theory note 2.7).
      lr_scale: learning rate in units of the stability limit 1/(4 gamma_1) (0 < lr_scale < 1).
      steps: number of GD updates; None = until the last predicted step plus six rise-widths.
      basis: ``eigen`` (exact change of variables, fast) or ``pixel`` (the update as written); same numbers.
      gate_ratio: step times are gated only for modes whose neighbours satisfy gamma_{j+1}/gamma_j <= gate_ratio.
      plateau_separation: plateaus are checked only between steps whose predicted separation (gap / rise-width)
        is at least this.
      seed: seeds the images, crops and W(0).
    """

    data: PairData = PairData(dataset="patches", n_pairs=500, n_test=500)
    d: int = 10
    init_scale: float = 1e-30
    lr_scale: float = 0.5
    steps: int | None = None
    basis: Literal["eigen", "pixel"] = "eigen"
    gate_ratio: float = 0.95
    plateau_separation: float = 2.0
    seed: int = 0

    def __post_init__(self):
        errors = config_value_errors(self) + bound_errors(self, ("d", ">= 1"))
        m = self.data.input_dim
        if self.d > m:
            errors.append(f"d = {self.d} exceeds the input dimension m = crop^2 x channels = {m}: W is d x m and at "
                          f"most m modes can be learned")
        lo, hi = INIT_SCALE_RANGE
        if not lo <= self.init_scale < hi:
            errors.append(f"init_scale must be in [{lo:g}, {hi:g}): lambda_j(0) ~ init_scale^2 starts below the "
                          f"learned value 1 and stays a normal float64 (got {self.init_scale})")
        errors += bound_errors(
            self, ("lr_scale", "in (0, 1)", ", i.e. below the stability limit 1/(4 gamma_1)"),
            ("steps", ">= 1 or None"), ("gate_ratio", "in (0, 1]"), ("plateau_separation", ">= 0"))
        raise_config_errors(errors, "linear_bt")

    @classmethod
    def smoke(cls, dataset: str = "digits") -> "LinearBTConfig":
        """A seconds-long run used by the tests: few pairs, d = 4, small crops."""
        return cls(data=PairData(dataset=dataset, n_pairs=80, crop=5, n_test=40), d=4)  # type: ignore[arg-type]
