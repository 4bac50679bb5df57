#!/usr/bin/env bash
# Set up, generate LLaVA data for the bundled example with the embedded teacher (CPU, no server), then write
# its stats, its dataset card and its HTML report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/visinstruct generate \
  --coco-captions examples/coco-mini/captions.json \
  --coco-instances examples/coco-mini/instances.json \
  --out out/demo/llava.json "$@"
echo
echo "LLaVA json: out/demo/llava.json (image paths are relative to examples/coco-mini/images)"
echo
.venv/bin/visinstruct stats out/demo/llava.json --image-root examples/coco-mini/images \
  --rejects out/demo/llava.rejects.jsonl --html out/demo/report.html --card out/demo/README.md \
  --ledger out/demo/llava.json.ledger.sqlite --json out/demo/stats.json --name "visinstruct demo"
echo
echo "Dataset card: out/demo/README.md   stats: out/demo/stats.json"
echo "HTML report (one file, opens offline): file://$PWD/out/demo/report.html"
echo "  open it with: xdg-open out/demo/report.html   (macOS: open out/demo/report.html)"
if .venv/bin/visinstruct view --help >/dev/null 2>&1; then
  echo "Browse the records: .venv/bin/visinstruct view out/demo/llava.json --image-root examples/coco-mini/images \\"
  echo "    --rejects out/demo/llava.rejects.jsonl   (prints the local URL to open)"
fi
