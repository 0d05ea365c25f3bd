#!/usr/bin/env bash
# Debian packages objfs needs: FUSE 3 (pyfuse3 builds against libfuse3), the
# erasure-coding libraries behind pyeclib (ISA-L and liberasurecode), dcmtk
# for DICOM interoperability tests and benchmarks, and the standard tools the
# FUSE tests drive (rsync, attr, e2fsprogs' chattr), and Chromium, the headless
# browser the DICOMweb CORS test drives, systemd (systemd-analyze checks the units)
# and iproute2 (the README test runs its examples in a network namespace), curl
# and jq (the README's examples use them), smartmontools (drive health in objfs status),
# patch (scripts/install-pyfuse3.sh patches pyfuse3's sources before building them).
set -euo pipefail
PACKAGES=(fuse3 libfuse3-dev pkg-config gcc patch python3-dev python3-venv liberasurecode-dev libisal-dev dcmtk rsync attr e2fsprogs tar diffutils findutils git chromium systemd iproute2 curl jq smartmontools)
missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "objfs: missing Debian packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if [[ ! -e /dev/fuse ]]; then
    echo "objfs: /dev/fuse is missing; the FUSE mount and its tests need it" >&2
    exit 1
fi
