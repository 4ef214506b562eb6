#!/usr/bin/env bash
# Build (once) the arm64 environment `edgeopt verify --platform arm64` runs bundles in:
# a minimal Debian arm64 root with python3, the aarch64 onnxruntime and numpy wheels,
# and a launcher that runs that python under qemu-user pinned to a Neoverse-N1 CPU.
#
#   tools/arm64-env.sh            # builds into $EDGEOPT_ARM64_ENV (see below); instant when built
#   tools/arm64-env.sh --check    # exit 0 when built, 1 otherwise
#
# Needs Debian's qemu-user-static and debootstrap (apt-get install qemu-user-static
# debootstrap) and network access to a Debian mirror and PyPI. No binfmt_misc and no root:
# the emulator is started by the launcher, not by the kernel.
set -euo pipefail

ORT_VERSION="${ORT_VERSION:-1.32.0}"
NUMPY_VERSION="${NUMPY_VERSION:-2.4.6}"
SUITE="${ARM64_SUITE:-bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# The cache layout edgeopt.platforms.arm64 reads; keep the two in step.
ENV_DIR="${EDGEOPT_ARM64_ENV:-${EDGEOPT_CACHE:-$HOME/.cache/edgeopt}/arm64}"
PIP="${PIP:-python3 -m pip}"
# What the built environment holds: a different stamp rebuilds it.
STAMP="suite=$SUITE onnxruntime=$ORT_VERSION numpy=$NUMPY_VERSION layout=1"

ready() { [[ -f "$ENV_DIR/READY" && "$(cat "$ENV_DIR/READY")" == "$STAMP" ]]; }

if [[ "${1:-}" == "--check" ]]; then
    ready
    exit
fi
if ready; then
    echo "arm64 env ready: $ENV_DIR ($STAMP)"
    exit 0
fi

for tool in qemu-aarch64-static debootstrap; do
    if ! command -v "$tool" >/dev/null; then
        echo "arm64-env: $tool not found; install it: apt-get install qemu-user-static debootstrap" >&2
        exit 2
    fi
done

start=$(date +%s)
mkdir -p "$(dirname "$ENV_DIR")"
build="$(mktemp -d "$ENV_DIR.build-XXXXXX")"
trap 'rm -rf "$build"' EXIT
root="$build/root"

# --foreign runs no arm64 code: it downloads the packages and unpacks the required ones.
# python3 is not "required", so every downloaded package is unpacked by hand below;
# no maintainer script has to run for python to start.
echo "arm64-env: debootstrap $SUITE arm64 (minbase + python3) ..."
debootstrap --arch=arm64 --foreign --variant=minbase --include=python3 \
    "$SUITE" "$root" "$MIRROR" >"$build/debootstrap.log" 2>&1 \
    || { tail -20 "$build/debootstrap.log" >&2; exit 1; }
for deb in "$root"/var/cache/apt/archives/*.deb; do
    dpkg-deb -x "$deb" "$root"
done
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/usr/share/doc "$root"/usr/share/man \
       "$root"/usr/share/locale

pyver="$(readlink "$root/usr/bin/python3")"  # python3.11
pyver="${pyver#python}"
echo "arm64-env: onnxruntime $ORT_VERSION + numpy $NUMPY_VERSION for aarch64 cp${pyver/./} ..."
$PIP install -q --disable-pip-version-check --no-compile --target "$build/site" \
    --platform manylinux_2_28_aarch64 --python-version "$pyver" --implementation cp \
    --only-binary=:all: "onnxruntime==$ORT_VERSION" "numpy==$NUMPY_VERSION"

# onnxruntime's CPU probe (pytorch/cpuinfo) reads /proc/cpuinfo and crashes on the host's
# x86 one. qemu's -L prefix makes the guest's open("/proc/cpuinfo") find this file first.
# Neoverse-N1 features: the CPU qemu emulates below (asimddp = the sdot kernels MLAS uses).
mkdir -p "$root/proc"
ncpu="$(nproc)"
for ((i = 0; i < ncpu; i++)); do
    printf 'processor\t: %d\nBogoMIPS\t: 50.00\n' "$i"
    printf 'Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs\n'
    printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x3\nCPU part\t: 0xd0c\nCPU revision\t: 1\n\n'
done >"$root/proc/cpuinfo"

# -cpu neoverse-n1, not the default "max": max adds SME, on which qemu 7.2 gives wrong INT8
# MatMul results. Host PYTHON* variables must not leak into the guest python.
mkdir -p "$build/bin"
cat >"$build/bin/python3" <<'EOF'
#!/bin/sh
# python3 of the arm64 root, emulated (qemu-user, Neoverse-N1). Timings here are emulated.
env_dir="$(cd "$(dirname "$0")/.." && pwd)"
exec env -u PYTHONHOME -u PYTHONSTARTUP PYTHONPATH="$env_dir/site" PYTHONNOUSERSITE=1 \
    PYTHONDONTWRITEBYTECODE=1 QEMU_CPU=neoverse-n1 \
    qemu-aarch64-static -cpu neoverse-n1 -L "$env_dir/root" "$env_dir/root/usr/bin/python3" "$@"
EOF
chmod +x "$build/bin/python3"

# Prove the environment before publishing it: onnxruntime imports and runs an INT8 MatMul.
"$build/bin/python3" - <<'EOF'
import platform

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import _pybind_state  # noqa: F401  (the native library loaded)

assert platform.machine() == "aarch64", platform.machine()
print(f"arm64-env: onnxruntime {ort.__version__} on {platform.machine()}, numpy {np.__version__}")
EOF

echo "$STAMP" >"$build/READY"
rm -rf "$ENV_DIR"
mv "$build" "$ENV_DIR"
trap - EXIT
echo "arm64 env built in $(( $(date +%s) - start )) s: $ENV_DIR ($(du -sh "$ENV_DIR" | cut -f1))"
