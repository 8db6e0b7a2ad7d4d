#!/bin/bash
# Pack Ray and the pinned packages a bare GPU image lacks into one .tar.xz for a machine without
# internet (bench/bench_ray_grid.py's docstring says why). Every file comes from PyPI's official
# wheels, installed with `pip install --target` by a Python of the target's version, minus the
# parts of Ray the library never loads. Unpack there with
#     mkdir -p /tmp/site && tar -xJf site-ray-grid-cp312.tar.xz -C /tmp/site && export PYTHONPATH=/tmp/site:$PYTHONPATH
#
#   bench/make_ray_bundle.sh                       # -> .whl/ray-bundle/site-ray-grid-cp312.tar.xz
#   OUT=/tmp/bundle PY=python3.12 PYVER=3.12 bench/make_ray_bundle.sh
set -euo pipefail
OUT=${OUT:-.whl/ray-bundle}
PY=${PY:-python3.12}            # a Python of the target's minor version (for --target installs)
PYVER=${PYVER:-3.12}
TAG=cp${PYVER/./}
# Versions as in requirements.txt; the last four are Ray's needs a torch-only image lacks.
SPECS=(ray==2.60.0 duckdb==2.0.0 pytorch-optimizer==4.1.0 jsonschema==4.26.0
       jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1)

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$TMP/wheels" "${SPECS[@]}"
SITE="$TMP/site"
"$PY" -m pip install -q --target "$SITE" --no-deps --no-compile --no-index "$TMP"/wheels/*.whl
# Not loaded by landscape: Java workers, Ray's ML libraries, the dashboard's web UI, console
# scripts (their shebang names this machine's Python: use `python -m ray.scripts.scripts`).
rm -rf "$SITE/bin" "$SITE/ray/jars" "$SITE"/ray/{rllib,llm,serve,data,tune,train,air} \
    "$SITE/ray/dashboard/client"
printf 'landscape bundle for Python %s (manylinux x86_64) from: %s\nRemoved from ray: jars, rllib, llm, serve, data, tune, train, air, dashboard/client, bin\n' \
    "$PYVER" "${SPECS[*]}" >"$SITE/LANDSCAPE_BUNDLE.txt"
mkdir -p "$OUT"
tar --sort=name --owner=0 --group=0 --numeric-owner -C "$SITE" -cf - . | xz -6 -T2 \
    >"$OUT/site-ray-grid-$TAG.tar.xz"
(cd "$OUT" && sha256sum "site-ray-grid-$TAG.tar.xz" >SHA256SUMS && ls -l "site-ray-grid-$TAG.tar.xz")
