#!/usr/bin/env bash
# Set up, then generate LLaVA data for the bundled example with the embedded teacher (CPU, no server).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/visinstruct generate \
  --coco-captions examples/coco-mini/captions.json \
  --coco-instances examples/coco-mini/instances.json \
  --out out/demo/llava.json "$@"
echo
echo "LLaVA json: out/demo/llava.json (image paths are relative to examples/coco-mini/images)"
