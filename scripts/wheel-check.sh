#!/usr/bin/env bash
# The wheel as a user installs it: built from this tree, installed into a fresh venv outside the
# repository (pipx-style, the pinned dependencies by hash), then run from another directory:
# `cutover --help` and `cutover config check` on the examples the wheel ships.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
.venv/bin/python -m pip wheel -q --disable-pip-version-check --no-deps --no-build-isolation \
  -w "$work/dist" .
wheel=$(ls "$work"/dist/cutover-*.whl)
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --disable-pip-version-check --require-hashes -r requirements.lock
"$work/venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps "$wheel"
cd "$work"
"$work/venv/bin/cutover" --help > /dev/null
examples=$("$work/venv/bin/python" -c 'import config, pathlib; print(pathlib.Path(config.__file__).parent / "examples")')
for example in "$examples"/*.toml; do
  "$work/venv/bin/cutover" config check --config "$example" > /dev/null
done
echo "wheel ok: $(basename "$wheel"), installed outside the repository; --help and config check on $(ls "$examples" | wc -l) example(s)"
