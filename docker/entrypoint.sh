#!/bin/sh
# Build the model repository for the NGC target from the mounted store, then serve it (extra arguments go to
# `python -m builder serve`, e.g. --log-verbose 1). SIGTERM (docker stop) stops tritonserver cleanly.
set -eu
STORE="${NVP_STORE:-/data/store}"
REPO="${NVP_REPOSITORY:-/models}"
if [ ! -d "$STORE" ]; then
  echo "error: video store $STORE is not mounted (mount your store directory there, see docker/README.md)" >&2
  exit 1
fi
# NVP_TASKS: tasks to serve (default: every task some stored video was adapted for); the backbones' weights are
# read from $NVP_WEIGHTS_DIR (mount them; see docs/BACKBONES.md)
python -m builder build-repo --store "$STORE" --target ngc --out "$REPO" --no-progress \
  ${NVP_TASKS:+--tasks $NVP_TASKS} \
  --cache-size "${NVP_CACHE_SIZE:-32}" --instances "${NVP_INSTANCES:-${NVP_DECODE_INSTANCES:-1}}"
# NVP_LISTEN: the address tritonserver listens on inside the container. The default, every interface of the
# container, is what lets a published port reach it; who can reach a published port is set where it is published
# (compose.yaml: 127.0.0.1 unless NVP_PUBLISH_ADDRESS says otherwise). With `network_mode: host`, set 127.0.0.1.
exec python -m builder serve --repo "$REPO" --host "${NVP_LISTEN:-0.0.0.0}" \
  --grpc-port 8001 --http-port 8000 --metrics-port 8002 \
  --tritonserver "${NVP_TRITONSERVER:-/opt/tritonserver/bin/tritonserver}" \
  --backend-directory /opt/tritonserver/backends "$@"
