"""Configuration of the linear Barlow Twins experiment (Simon et al. 2023, Fig. 1A/B).

Command:   make fig-linear      (both embedded datasets; or `stepwise run linear_bt --dataset digits --out DIR`)
Runtime:   about 15 s per dataset on a 2-core CPU, JAX compilation included (measured by `make bench`).
Verdict:   all checks pass on `patches` and `digits`: step-time errors well under 2% (median) and 5% (max),
           loss plateaus within 0.1 of d - k, final row space within 1e-2 rad of the top-d eigenvectors.

Values the paper does not state (theory note, section 4 E1: [U]) are parameters here and are written to
results.json: the pixel preprocessing, the initial scale, the learning rate and the number of steps.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from stepwise.data import image_shape
from stepwise.errors import bound_errors, config_value_errors

DEFAULT_CROP = {"patches": 20, "digits": 6, "cifar10": 20, "stl10": 64}

# init_scale's range. lambda_j(0) ~ init_scale^2 must start below 1, the value every mode is learned to (at or above
# it there is no step to time: measured at 0.5 and 1, every step time is nan; at 3 GD diverges), and must stay a
# normal float64 with room for gamma_j and the Gram-Schmidt factors (init_scale 1e-160 makes the predicted step
# count nan).
INIT_SCALE_RANGE = (1e-100, 1.0)


@dataclasses.dataclass(frozen=True)
class LinearBTConfig:
    """Linear model f(x) = W x trained by full-batch GD on ||W Gamma W^T - I||_F^2 over fixed positive pairs.

    Attributes:
      dataset: image source; each image gives one pair of random crops (fixed for the whole run).
      n_pairs: number of images, hence positive pairs (paper: 500).
      crop: side of the square random crops (paper: 20 on 32x32 CIFAR-10); None = dataset default
        (patches 20, digits 6, cifar10 20, stl10 64). m = crop^2 x channels.
      d: embedding dimension.
      preprocess: ``center`` subtracts the mean over all 2n views from every pixel; ``none`` keeps raw [0, 1] pixels.
      init_scale: std of the entries of W(0) in units of 1/sqrt(gamma_1), so lambda_j(0) ~ init_scale^2.
        Small values make steps sharp and the final subspace exact (theory note 2.7).
      lr_scale: learning rate in units of the stability limit 1/(4 gamma_1) (0 < lr_scale < 1).
      steps: number of GD updates; None = until the last predicted step plus six rise-widths.
      basis: ``eigen`` (exact change of variables, fast) or ``pixel`` (the update as written); same numbers.
      gate_ratio: step times are gated only for modes whose neighbours satisfy gamma_{j+1}/gamma_j <= gate_ratio.
      plateau_separation: plateaus are checked only between steps whose predicted separation (gap / rise-width)
        is at least this.
      n_test: held-out images (different from the training ones) for the test-set Gram check.
      seed: seeds the images, crops and W(0).
      data_dir: folder for cifar10 / stl10 (else $STEPWISE_CIFAR10 / $STEPWISE_STL10 / $STEPWISE_DATA).
    """

    dataset: Literal["patches", "digits", "cifar10", "stl10"] = "patches"
    n_pairs: int = 500
    crop: int | None = None
    d: int = 10
    preprocess: Literal["center", "none"] = "center"
    init_scale: float = 1e-30
    lr_scale: float = 0.5
    steps: int | None = None
    basis: Literal["eigen", "pixel"] = "eigen"
    gate_ratio: float = 0.95
    plateau_separation: float = 2.0
    n_test: int = 500
    seed: int = 0
    data_dir: str | None = None

    def __post_init__(self):
        errors = config_value_errors(self) + bound_errors(self, ("n_pairs", ">= 2"))
        if self.crop is not None and self.crop < 1:
            errors.append(f"crop must be >= 1 (got {self.crop})")
        errors += bound_errors(self, ("d", ">= 1"))
        if self.dataset not in DEFAULT_CROP:
            errors.append(f"dataset must be one of {', '.join(DEFAULT_CROP)} (got {self.dataset!r})")
        elif self.crop is None or self.crop >= 1:
            h, w, c = image_shape(self.dataset)
            m = self.crop_size**2 * c
            if self.crop_size > min(h, w):
                errors.append(f"crop {self.crop_size} does not fit in {self.dataset} images of {h}x{w}")
            elif self.d > m:
                errors.append(f"d = {self.d} exceeds the input dimension m = crop^2 x channels = {m}: W is d x m and "
                              f"at most m modes can be learned")
        lo, hi = INIT_SCALE_RANGE
        if not lo <= self.init_scale < hi:
            errors.append(f"init_scale must be in [{lo:g}, {hi:g}): lambda_j(0) ~ init_scale^2 starts below the "
                          f"learned value 1 and stays a normal float64 (got {self.init_scale})")
        errors += bound_errors(
            self, ("lr_scale", "in (0, 1)", ", i.e. below the stability limit 1/(4 gamma_1)"),
            ("steps", ">= 1 or None"), ("gate_ratio", "in (0, 1]"), ("plateau_separation", ">= 0"))
        if self.n_test < 0 or self.n_test == 1:
            # One held-out image makes a 1x1 Gram matrix, equal to the prediction's after normalisation whatever
            # was learned (measured: test_gram_rel_error 0.0, a pass that checks nothing).
            errors.append(f"n_test must be 0 (no held-out check) or >= 2 (got {self.n_test})")
        if errors:
            raise ValueError("invalid linear_bt config: " + "; ".join(errors))

    @property
    def crop_size(self) -> int:
        return DEFAULT_CROP[self.dataset] if self.crop is None else self.crop

    @classmethod
    def smoke(cls, dataset: str = "digits") -> "LinearBTConfig":
        """A seconds-long run used by the tests: few pairs, d = 4, small crops."""
        return cls(dataset=dataset, n_pairs=80, crop=5, d=4, n_test=40)  # type: ignore[arg-type]
