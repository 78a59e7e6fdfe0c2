# blindsr: every command a user or CI needs. The virtualenv lives in .venv and is (re)built when
# setup.py, settings.ini or constraints.txt change.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RUNS ?= runs
OFFICIAL_DASR ?=

.PHONY: install demo figures representation representation-pool representation-sr ablation ablation-extra pcl hisr tiles test export check-export docs check-site lab bench clean

install: $(STAMP)

$(STAMP): setup.py settings.ini constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=23" 2>/dev/null || true
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (blindsr)" >/dev/null
	touch $(STAMP)

# The main job, run through papermill on embedded data: the degradation gallery, then DASR trained on the embedded
# photographs and evaluated on Set5/Set14 (they ship with blindsr). Everything it writes goes under $(RUNS)/ (ignored
# by git): the gallery to $(RUNS)/degradation_gallery, the run folder (figures, TensorBoard events, table) to
# $(RUNS)/train_dasr; running it again continues or re-evaluates that run. `make figures` refreshes the committed figures.
demo: install
	mkdir -p $(RUNS)
	$(VENV)/bin/papermill --cwd nbs/experiments -k python3 \
	    nbs/experiments/degradation_gallery.ipynb $(RUNS)/degradation_gallery.ipynb \
	    -p out_dir "$(CURDIR)/$(RUNS)/degradation_gallery"
	$(VENV)/bin/papermill --cwd nbs/experiments -k python3 \
	    nbs/experiments/train_dasr.ipynb $(RUNS)/train_dasr.ipynb \
	    -p out_dir "$(CURDIR)/$(RUNS)/train_dasr" -p progress False
	@echo "demo: table in $(RUNS)/train_dasr/table.md, figures in $(RUNS)/train_dasr/figures and $(RUNS)/degradation_gallery,"
	@echo "      executed notebooks in $(RUNS)/; curves: $(VENV)/bin/tensorboard --logdir $(RUNS)"
	@cat $(RUNS)/train_dasr/table.md

# The committed figures of the demo, regenerated: overwrites figures/degradation_{dasr,diverse,kernels}.png and
# figures/train_dasr_{grid,comparison,representation,loss_curve}.png with those of the demo's run (runs the demo first).
figures: demo
	mkdir -p figures
	@echo "figures: overwriting figures/degradation_*.png and figures/train_dasr_*.png"
	cp $(RUNS)/degradation_gallery/degradation_*.png figures/
	cp $(RUNS)/train_dasr/figures/train_dasr_*.png figures/
	@git status --short -- figures 2>/dev/null || true

# The seed-000 ablation: a shared warm start per seed, then 15 variants of train_dasr (the notes' claims, the batch-size
# control, the constant floor and the oracle ceiling) x 3 paired seeds, through submitit's local executor, 2 runs at a
# time of 1 thread each, about 95 minutes on 2 cores (GRID_EXECUTOR=slurm GRID_WORKERS=32 on a cluster; see the README). Finished runs in
# $(RUNS)/ablation are reused, killed ones retried; the report (ablation.md, ablation.png, ablation_cl.png) goes to figures/.
GRID_EXECUTOR ?= local
GRID_WORKERS ?= 2
GRID_THREADS ?= 1
GRID_ARGS = -p executor $(GRID_EXECUTOR) -p workers $(GRID_WORKERS) -p threads_per_run $(GRID_THREADS)
ablation: install
	mkdir -p $(RUNS) figures
	$(VENV)/bin/papermill --cwd nbs/experiments -k python3 nbs/experiments/ablation.ipynb $(RUNS)/ablation.ipynb \
	    -p out_dir "$(CURDIR)/$(RUNS)/ablation" -p report_dir "$(CURDIR)/figures" $(GRID_ARGS)
	@cat figures/ablation.md

# What the degradation representation learns (issue 16): train_encoder.ipynb for each objective (DASR's MoCo, the
# degradation-aware 'degcon', the supervised estimator, both) x 3 paired seeds at 3000 steps, learning curves against
# the untrained floor and the estimator's ceiling, paired intervals; about 25 minutes a seed on 2 cores. Finished runs
# in $(RUNS)/representation are reused; the report (representation.md, representation_curves.png) goes to figures/.
representation: install
	mkdir -p $(RUNS) figures
	$(VENV)/bin/papermill --cwd nbs/experiments -k python3 nbs/experiments/representation.ipynb \
	    $(RUNS)/representation.ipynb -p out_dir "$(CURDIR)/$(RUNS)/representation" -p report_dir "$(CURDIR)/figures"
	@cat figures/representation.md

# The estimator with log-energy pooling against DASR's mean pooling, 3 paired seeds (nbs/experiments/representation_pool.yaml;
# about 15 minutes on 2 cores) into figures/representation_pool.md.
representation-pool: install
	mkdir -p $(RUNS) figures
	$(VENV)/bin/papermill --cwd nbs/experiments -k python3 nbs/experiments/representation.ipynb \
	    $(RUNS)/representation_pool.ipynb -f nbs/experiments/representation_pool.yaml \
	    -p out_dir "$(CURDIR)/$(RUNS)/representation_pool" -p report_dir "$(CURDIR)/figures"
	@cat figures/representation_pool.md

# What SR gains from the representation (issue 16): train_dasr.ipynb at the demo's budget with the constant
# representation (the floor), DASR's MoCo, the estimator and the oracle told the true blur (the ceiling), x 3 paired
# seeds; about 35 minutes on 2 cores. Finished runs in $(RUNS)/representation_sr are reused; the report
# (representation_sr.md, representation_sr.png) goes to figures/.
representation-sr: install
	mkdir -p $(RUNS) figures
	$(VENV)/bin/papermill --cwd nbs/experiments -k python3 nbs/experiments/representation_sr.ipynb \
	    $(RUNS)/representation_sr.ipynb -p out_dir "$(CURDIR)/$(RUNS)/representation_sr" -p report_dir "$(CURDIR)/figures"
	@cat figures/representation_sr.md

# The second grid (SupCon and query-side positives against 5 averaged positives), parameters in
# nbs/experiments/ablation_extra.yaml; about 10 minutes when the default grid's runs (and warm starts) are there to reuse.
ablation-extra: install
	mkdir -p $(RUNS) figures
	$(VENV)/bin/papermill --cwd nbs/experiments -k python3 nbs/experiments/ablation.ipynb $(RUNS)/ablation_extra.ipynb \
	    -f nbs/experiments/ablation_extra.yaml -p out_dir "$(CURDIR)/$(RUNS)/ablation" -p report_dir "$(CURDIR)/figures" $(GRID_ARGS)
	@cat figures/ablation_extra.md

# PCL-SISR (seed 001): the EDSR baseline pre-trained with L1, then fine-tuned with L1 and with L1 + PCL at one CPU budget
# (about 30 minutes on 2 cores). The run folder is $(RUNS)/train_pcl (an interrupted run continues); the table and
# figures go to figures/ (train_pcl.md, train_pcl_comparison.png, train_pcl_losses.png).
pcl: install
	mkdir -p $(RUNS) figures
	$(VENV)/bin/papermill --cwd nbs/experiments -k python3 nbs/experiments/train_pcl.ipynb $(RUNS)/train_pcl.ipynb \
	    -p out_dir "$(CURDIR)/$(RUNS)/train_pcl" -p figures_dir "$(CURDIR)/figures" -p progress False
	@cat figures/train_pcl.md

# Seed 003: PSRT and the four kernel-attention variants fine-tuned from the official CAVE x4 weights (every variant equals
# the official model at step 0), PSRT without shuffles from the same start, 3 seeds paired, on the golden scene's
# train / validation / test bands (or the CAVE protocol: make hisr CAVE=/path). About 40 minutes on 2 cores; runs in
# $(RUNS)/hisr_finetune are reused. The report (hisr_finetune.md, hisr_finetune.png) goes to figures/.
hisr: install
	mkdir -p $(RUNS) figures
	$(VENV)/bin/papermill --cwd nbs/experiments -k python3 nbs/experiments/hisr_finetune.ipynb $(RUNS)/hisr_finetune.ipynb \
	    -p out_dir "$(CURDIR)/$(RUNS)/hisr_finetune" -p report_dir "$(CURDIR)/figures" $(if $(CAVE),-p data_dir "$(CAVE)")
	@cat figures/hisr_finetune.md

# Notebook tests print each notebook as it starts and ends, with its time; pytest lists every skip with its reason.
test: install
	PYTHONUNBUFFERED=1 $(VENV)/bin/nbdev_test --n_workers 2 --do_print --timing
	$(VENV)/bin/pytest -q -rs tests

# Notebooks are the source: regenerate the package, strip notebook noise, refresh README.md from index.ipynb.
export: install
	$(VENV)/bin/nbdev_export
	$(VENV)/bin/nbdev_clean
	$(PY) tools/build_docs.py --readme-only

# CI: fail when the committed package, notebooks or README differ from what `make export` produces.
check-export: export
	@if [ -n "$$(git status --porcelain -- blindsr nbs README.md)" ]; then \
	    echo "make export changed these files: the package is out of sync with the notebooks or notebooks are not clean:"; \
	    git status --porcelain -- blindsr nbs README.md; git --no-pager diff --stat -- blindsr nbs README.md; exit 1; fi

docs: install
	$(PY) tools/build_docs.py

# The docs site in a real browser, fast: built without executing the notebooks into $(CHECK_SITE_DIR), then every page
# opened in headless Chromium (Debian's chromium and chromium-driver) by tools/check_site.py: console errors, broken
# images, links and anchors fail it; screenshots of the home page and an API page in $(CHECK_SITE_DIR)/site_check/.
CHECK_SITE_DIR ?= $(or $(TMPDIR),/tmp)/blindsr_check_site
check-site: install
	$(PY) tools/build_docs.py --no-exec --out "$(CHECK_SITE_DIR)"
	$(PY) tools/check_site.py "$(CHECK_SITE_DIR)/site" --screenshots "$(CHECK_SITE_DIR)/site_check"

# JupyterLab on the notebooks (as root, e.g. in a container, with --allow-root, which Jupyter otherwise refuses).
lab: install
	$(VENV)/bin/jupyter lab --notebook-dir=nbs $$([ "$$(id -u)" = 0 ] && echo --allow-root)

# Tiled inference: the DASR x4 that `make demo` trains, on Set14's barbara; naive tiles against blended tiles with
# context, both against the full-image output (15 s once the demo's model exists; the demo runs first if it does not).
# Writes figures/tiled_inference_seams.png and figures/tiled_inference.md.
tiles: install
	mkdir -p $(RUNS) figures
	test -f $(RUNS)/train_dasr/model_inference.pt || $(MAKE) demo
	$(VENV)/bin/papermill --cwd nbs/experiments -k python3 nbs/experiments/tiled_inference.ipynb $(RUNS)/tiled_inference.ipynb \
	    -p figures_dir "$(CURDIR)/figures" -p weights "$(CURDIR)/$(RUNS)/train_dasr/model_inference.pt"
	@cat figures/tiled_inference.md

bench: install
	$(PY) benchmarks/degradation.py
	$(PY) benchmarks/large_image.py
	$(PY) benchmarks/large_image.py --cli ../shared/golden/dasr/dasr_official_x4_state.pt
	$(PY) benchmarks/train_step.py
	@if [ -d "$(OFFICIAL_DASR)" ]; then $(PY) benchmarks/official_dasr.py --official "$(OFFICIAL_DASR)"; \
	else echo "benchmarks/official_dasr.py skipped: set OFFICIAL_DASR=/path/to/an/export/of/LongguangWang/DASR"; fi

clean:
	rm -rf _proc _docs site $(RUNS)
