#!/usr/bin/env bash
# Install pyfuse3 with the fallocate operation into a venv:
#   scripts/install-pyfuse3.sh [VENV_PYTHON]     (default: .venv/bin/python)
# pyfuse3 3.5.0 has no fallocate (see scripts/pyfuse3-fallocate.patch and
# docs/design.md), so the pinned sdist is downloaded from PyPI by name and
# version, checked against its pinned sha256, patched and built here
# (Cython, setuptools and setuptools_scm come from PyPI through pip's build
# isolation; gcc, pkg-config, libfuse3-dev and patch from
# scripts/install-system-deps.sh). Does nothing when the venv's pyfuse3 already
# has Operations.fallocate. The installed version is 3.5.0+objfs.fallocate1:
# it satisfies the pyproject's pyfuse3==3.5.0 and pip never prefers PyPI's
# 3.5.0 wheel over it, so installing objfs afterwards keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-.venv/bin/python}
VERSION=3.5.0
SHA256=88399a9494b88603230bba300f4ba9ad63fece5ed514ca3633d555a0c6a42b24
LOCAL_VERSION="$VERSION+objfs.fallocate1"
PATCH="$PWD/scripts/pyfuse3-fallocate.patch"

if "$PY" -c 'import sys, pyfuse3; sys.exit(0 if hasattr(pyfuse3.Operations, "fallocate") else 1)' 2>/dev/null; then
    exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf 'pyfuse3==%s --hash=sha256:%s\n' "$VERSION" "$SHA256" > "$work/pinned.txt"
# --require-hashes: pip refuses a file with another digest before building anything from it.
"$PY" -m pip download -q --no-deps --no-binary :all: --require-hashes -r "$work/pinned.txt" -d "$work"
echo "$SHA256  $work/pyfuse3-$VERSION.tar.gz" | sha256sum -c --quiet -
tar -xzf "$work/pyfuse3-$VERSION.tar.gz" -C "$work"
src="$work/pyfuse3-$VERSION"
patch -d "$src" -p1 --batch --forward --quiet < "$PATCH"
rm -f "$src/src/pyfuse3/__init__.c"  # generated from the unpatched .pyx: Cython must generate it again
SETUPTOOLS_SCM_PRETEND_VERSION_FOR_PYFUSE3="$LOCAL_VERSION" "$PY" -m pip install -q "$src"
"$PY" -c 'import sys, pyfuse3; sys.exit(0 if hasattr(pyfuse3.Operations, "fallocate") else "pyfuse3 was installed without fallocate")'
echo "objfs: installed pyfuse3 $LOCAL_VERSION (with fallocate) into $("$PY" -c 'import sys; print(sys.prefix)')"
