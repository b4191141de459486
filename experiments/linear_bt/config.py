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

DEFAULT_CROP = {"patches": 20, "digits": 6, "cifar10": 20, "stl10": 64}


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
        errors = []
        if self.n_pairs < 2:
            errors.append(f"n_pairs must be >= 2 (got {self.n_pairs})")
        if self.crop is not None and self.crop < 1:
            errors.append(f"crop must be >= 1 (got {self.crop})")
        if self.d < 1:
            errors.append(f"d must be >= 1 (got {self.d})")
        if not self.init_scale > 0:
            errors.append(f"init_scale must be > 0 (got {self.init_scale})")
        if not 0 < self.lr_scale < 1:
            errors.append(f"lr_scale must be in (0, 1), i.e. below the stability limit 1/(4 gamma_1) (got {self.lr_scale})")
        if self.steps is not None and self.steps < 1:
            errors.append(f"steps must be >= 1 or None (got {self.steps})")
        if not 0 < self.gate_ratio <= 1:
            errors.append(f"gate_ratio must be in (0, 1] (got {self.gate_ratio})")
        if self.n_test < 0:
            errors.append(f"n_test must be >= 0 (got {self.n_test})")
        if errors:
            raise ValueError("invalid linear_bt config: " + "; ".join(errors))

    @property
    def crop_size(self) -> int:
        return DEFAULT_CROP[self.dataset] if self.crop is None else self.crop

    @classmethod
    def smoke(cls, dataset: str = "digits") -> "LinearBTConfig":
        """A seconds-long run used by the tests: few pairs, d = 4, small crops."""
        return cls(dataset=dataset, n_pairs=80, crop=5, d=4, n_test=40)  # type: ignore[arg-type]
