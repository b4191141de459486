# stepwise: every target creates or reuses the project's virtual environment (.venv) by itself.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
RUNS   ?= runs
# Two pytest workers on the 2-core CI machine; override with `make test PYTEST_WORKERS=auto`.
PYTEST_WORKERS ?= 2

.PHONY: test-compat test-nt gpu-wheels gpu-check bench-ntk verify-example fig-ntk-after-training install test test-slow reproduce fig-linear fig-deep fig-deep-resnet fig-kernel fig-noncontrastive-linear fig-noncontrastive-deep fig-directpred fig-hltm fig-grassmann fig-width-sweep fig-step-map fig-speedup report bench bench-train clean help

help:
	@echo "make reproduce   run every experiment at CPU scale on the embedded data -> reports/index.html"
	@echo "make test        fast test suite (CI)"
	@echo "make install     create/refresh .venv with stepwise and its test tools"
	@echo "make fig-linear  Simon et al. 2023 Fig. 1A/B (linear Barlow Twins) on patches and digits"
	@echo "make fig-kernel  Simon et al. 2023 kernel extension: kernel machines (NTK, RBF) vs kernel PCA theory"
	@echo "make fig-width-sweep  Simon et al. 2023 NTK extension: ReLU MLPs of growing width vs the NTK prediction"
	@echo "make fig-deep    Simon et al. 2023 Fig. 1C/D: MLP on digits with Barlow Twins, SimCLR, VICReg as published, then the theory forms"
	@echo "make fig-deep-resnet  the same rows on a GroupNorm ResNet-10 on 32x32 photo patches (CPU, ~1 h; not in reproduce)"
	@echo "make fig-step-map  Simon et al. 2023 E3/E4: where BT/SimCLR/VICReg show steps, init scale x lr x width (<= 15 min)"
	@echo "make fig-noncontrastive-linear  Tian et al. 2021: linear BYOL/SimSiam theory checks A1-A9"
	@echo "make fig-noncontrastive-deep  Tian et al. 2021 Fig. 2: BYOL predictor alignment/symmetry on an MLP (B1-B3)"
	@echo "make fig-directpred  Tian et al. 2021 Sec. 6: DirectPred vs trained predictors, 3 seeds, eps sweep"
	@echo "make fig-hltm    Tian et al. 2020: tree ReLU net learns HLTM latents; covariance-operator identities"
	@echo "make fig-grassmann  Esser et al. 2023: linear SSL collapse, exact Grassmann flow, SSL vs supervised NTK vs width"
	@echo "make fig-speedup  Simon et al. 2023 sec. 5: focusing the gradient on small eigendirections (linear + MLP)"
	@echo "make report      rebuild reports/index.html from $(RUNS)/*/results.json"
	@echo "make bench       timing benchmarks -> bench/*.json"
	@echo "make bench-train time per training step, JAX vs PyTorch (installs torch, bench-only) -> bench/bench_train.json"
	@echo "make bench-ntk   empirical NTK time / peak memory per backend, n = 250..2000 (MLP, ResNet) -> bench/bench_ntk.json"
	@echo "make fig-ntk-after-training  Simon et al. 2023 E6: BT/SimCLR/VICReg embeddings vs their after-training NTK"
	@echo "make verify-example  stepwise verify on experiments/custom_architecture.py and batchnorm_resnet.py (new architectures vs their NTK)"
	@echo "make test-slow   full-size runs marked slow"
	@echo "make gpu-wheels  download into .whl/ the wheels the GPU image lacks (carried by the device tool)"
	@echo "make gpu-check   the prepared GPU check (benchmarks/gpu/check.sh; GPU_DRYRUN=1: a few iterations here)"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	# neural-tangents 0.6.5 declares the TF runtime and tf2jax as requirements, used only by its `experimental`
	# TF port, which stepwise never imports (stepwise._compat): install it without them, plus its one
	# real runtime dependency besides jax.
	$(PY) -m pip install --quiet --no-deps neural-tangents==0.6.5
	$(PY) -m pip install --quiet 'frozendict>=2.3.8'
	@touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -n $(PYTEST_WORKERS) -m "not slow"

test-slow: $(STAMP)
	$(PY) -m pytest -n $(PYTEST_WORKERS) -m slow

# The compatibility matrix (tools/compat_matrix.py): a fast test subset on Python 3.11-3.13 x JAX 0.7-0.12, each in
# a cached virtual environment under ~/.cache/stepwise-compat -> docs/compat.json ("legs"). A few minutes a leg
# on 2 cores (plus the first install); some legs only: `make test-compat LEGS=py313-newest,py311-jax0.7.2`.
test-compat:
	$(PYTHON) tools/compat_matrix.py $(if $(LEGS),--legs $(LEGS))

# neural-tangents 0.6.5's own tests (its PyPI sdist, cached in ~/.cache/stepwise-nt) against stepwise's shim ->
# docs/compat.json. Another environment: `make test-nt VENV=<venv>` (used as it is, stepwise installed in it).
# Installs the suite's test-only requirements (absl-py, more-itertools) into that environment if missing.
test-nt: $(if $(filter .venv,$(VENV)),$(STAMP))
	$(PY) tools/nt_suite.py

fig-linear: $(STAMP)
	$(VENV)/bin/stepwise run linear_bt --data.dataset patches --out $(RUNS)/linear_bt_patches --overwrite
	$(VENV)/bin/stepwise run linear_bt --data.dataset digits --out $(RUNS)/linear_bt_digits --overwrite

fig-deep: $(STAMP)
	$(VENV)/bin/stepwise run stepwise_deep --loss barlow_twins --out $(RUNS)/stepwise_deep_barlow_twins --overwrite
	$(VENV)/bin/stepwise run stepwise_deep --loss simclr --out $(RUNS)/stepwise_deep_simclr --overwrite
	$(VENV)/bin/stepwise run stepwise_deep --loss vicreg --out $(RUNS)/stepwise_deep_vicreg --overwrite
	$(VENV)/bin/stepwise run stepwise_deep --loss barlow_twins_theory --out $(RUNS)/stepwise_deep_barlow_twins_theory --overwrite
	$(VENV)/bin/stepwise run stepwise_deep --loss infonce_floored --out $(RUNS)/stepwise_deep_infonce_floored --overwrite

# The CPU ResNet stand-in (README, "Real networks"): ~14 min per loss on the loaded 2-core CPU, so not in reproduce.
fig-deep-resnet: $(STAMP)
	$(VENV)/bin/stepwise run stepwise_deep --scale cpu-resnet --loss barlow_twins --out $(RUNS)/stepwise_deep_resnet_barlow_twins --overwrite
	$(VENV)/bin/stepwise run stepwise_deep --scale cpu-resnet --loss simclr --out $(RUNS)/stepwise_deep_resnet_simclr --overwrite
	$(VENV)/bin/stepwise run stepwise_deep --scale cpu-resnet --loss vicreg --out $(RUNS)/stepwise_deep_resnet_vicreg --overwrite
	$(VENV)/bin/stepwise run stepwise_deep --scale cpu-resnet --loss barlow_twins_theory --out $(RUNS)/stepwise_deep_resnet_barlow_twins_theory --overwrite

fig-noncontrastive-linear: $(STAMP)
	$(VENV)/bin/stepwise run noncontrastive_linear --out $(RUNS)/noncontrastive_linear --overwrite

fig-noncontrastive-deep: $(STAMP)
	$(VENV)/bin/stepwise run noncontrastive_deep --out $(RUNS)/noncontrastive_deep --overwrite

fig-directpred: $(STAMP)
	$(VENV)/bin/stepwise run directpred --out $(RUNS)/directpred --overwrite

report: $(STAMP)
	$(VENV)/bin/stepwise report --runs $(RUNS) --out reports/index.html

fig-kernel: $(STAMP)
	$(VENV)/bin/stepwise run kernel_bt --kernel ntk --out $(RUNS)/kernel_bt_ntk --overwrite
	$(VENV)/bin/stepwise run kernel_bt --kernel rbf --out $(RUNS)/kernel_bt_rbf --overwrite

fig-hltm: $(STAMP)
	$(VENV)/bin/stepwise run hltm --out $(RUNS)/hltm --overwrite

fig-grassmann: $(STAMP)
	$(VENV)/bin/stepwise run grassmann --out $(RUNS)/grassmann --overwrite

fig-width-sweep: $(STAMP)
	$(VENV)/bin/stepwise run width_sweep --out $(RUNS)/width_sweep --overwrite

fig-step-map: $(STAMP)
	$(VENV)/bin/stepwise run step_map --out $(RUNS)/step_map --overwrite

fig-ntk-after-training: $(STAMP)
	$(VENV)/bin/stepwise run ntk_after_training --out $(RUNS)/ntk_after_training --overwrite

fig-speedup: $(STAMP)
	$(VENV)/bin/stepwise run speedup --out $(RUNS)/speedup --overwrite

# `stepwise verify` exits 1 when a check fails (the run is published and the report shows it: go on), 2 when it could
# not run (nothing published: stop). --overwrite: the previous run is replaced when the new one completes.
verify-example: $(STAMP)
	$(VENV)/bin/stepwise verify --model experiments/custom_architecture.py:make_model --out $(RUNS)/verify_example \
		--overwrite || test $$? -eq 1
	$(VENV)/bin/stepwise verify --model experiments/custom_architecture.py:make_model --loss barlow_twins_theory \
		--out $(RUNS)/verify_example_theory --overwrite || test $$? -eq 1
	$(VENV)/bin/stepwise verify --model experiments/batchnorm_resnet.py:make_model \
		--out $(RUNS)/verify_batchnorm_resnet --overwrite || test $$? -eq 1

reproduce: fig-linear fig-kernel fig-deep fig-step-map fig-noncontrastive-linear fig-noncontrastive-deep fig-directpred fig-hltm fig-grassmann fig-width-sweep fig-ntk-after-training fig-speedup verify-example
	$(MAKE) --no-print-directory report

bench: $(STAMP)
	$(PY) benchmarks/bench_fig_linear.py --out bench/fig_linear.json

# PyTorch is a benchmark-only dependency: installed here when missing, never by `make install` / `make test`.
bench-train: $(STAMP)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet torch==2.13.0
	$(PY) benchmarks/bench_train.py --out bench

# Each case runs in its own process (honest peak RSS); about an hour on a 2-core CPU. Quick look: --quick.
bench-ntk: $(STAMP)
	$(PY) benchmarks/bench_ntk.py --out bench

# The GPU machine reaches no registry: carry what its image lacks (benchmarks/gpu/wheels.py says which) as wheels.
gpu-wheels:
	$(PYTHON) benchmarks/gpu/wheels.py --dest .whl

# On the GPU machine (device tool, carrying .whl): `make gpu-check` or `bash benchmarks/gpu/check.sh`; its files land
# in $$OUT and are committed under docs/gpu/. GPU_DRYRUN=1 runs every step for a few iterations with the venv here.
GPU_DRYRUN ?= 0
gpu-check: $(if $(filter 1,$(GPU_DRYRUN)),$(STAMP),)
	GPU_DRYRUN=$(GPU_DRYRUN) $(if $(filter 1,$(GPU_DRYRUN)),PY=$(abspath $(PY)),) bash benchmarks/gpu/check.sh

clean:
	rm -rf $(RUNS) reports bench .pytest_cache
