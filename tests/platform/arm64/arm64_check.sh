#!/usr/bin/env bash
# Bundles exported on x86-64, verified on ARM64 under QEMU user emulation (issue 24).
#
#   sudo bash tests/platform/arm64/arm64_check.sh export/default-fp32 export/default-fp16 export/default-int8w ...
#
# What it does, and everything it touches:
#   - an ARM64 Debian root (debootstrap, minbase + python3) in $ARM64_DIR (default
#     ~/.cache/dlsr-deploy/arm64/rootfs), built once and reused; the project's torch-free runtime is
#     installed there in a venv from wheels only (pip install '.[cpu]': onnxruntime, numpy, Pillow,
#     click, tqdm for aarch64, and this project's pure-Python wheel);
#   - the binfmt_misc entry qemu-aarch64 (from qemu-user-static's binfmt.d file), registered only if
#     it is not there, and unregistered at the end if this script registered it;
#   - /proc bind-mounted into the root while it runs (not /sys: see step 4), unmounted at the end;
#     the CPU features QEMU emulates are read from the auxiliary vector (AT_HWCAP);
#   - /sys bind-mounted only while a bundle that runs on OpenVINO is checked (its CPU plugin needs it);
#   - per bundle, on ONNX Runtime CPU or, for bundles that list only OpenVINO, on OpenVINO (its aarch64
#     wheel, installed only then): `dlsr-check --on-target` (the golden-set self-check on both scoring paths) and
#     `dlsr-score --scores all` on N_IMAGES real images (default 300: CIFAR-10 test, Tiny ImageNet,
#     DTD) on ARM64, the same dlsr-score on this machine, then tests/platform/arm64/arm64_report.py writes
#     tests/platform/arm64/results/$STEM.{json,md} (STEM=arm64 unless given).
# Emulation is slow (a bundle's self-check took over 25 CPU-minutes for Lite2 @ 160): RESUME=1 keeps
# the self-check reports of an earlier run (out/NAME-check.json) and checks only the bundles without
# one; the scores are always redone, on N_IMAGES images.
# Timings under emulation mean nothing and are not reported; correctness is what this proves.
# Needs root, apt packages qemu-user-static and debootstrap, and the package registries.
set -euo pipefail
cd "$(dirname "$0")/../../.."
[ $# -ge 1 ] || { echo "usage: sudo bash tests/platform/arm64/arm64_check.sh BUNDLE [BUNDLE ...]" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "error: needs root (binfmt_misc, debootstrap, chroot)" >&2; exit 1; }
for tool in debootstrap chroot; do
  command -v "$tool" >/dev/null || { echo "error: $tool missing: apt install qemu-user-static debootstrap" >&2; exit 1; }
done
CONF=/usr/lib/binfmt.d/qemu-aarch64.conf
[ -f "$CONF" ] || { echo "error: $CONF missing: apt install qemu-user-static" >&2; exit 1; }
PY=${PYTHON:-.venv/bin/python}
DIR=${ARM64_DIR:-$HOME/.cache/dlsr-deploy/arm64}
RFS=$DIR/rootfs
DATA=${DATA:-../shared/data}
N_IMAGES=${N_IMAGES:-300}
STEM=${STEM:-arm64}  # results/STEM.{json,md}: another stem keeps the committed arm64.* of other bundles
# The emulated CPU: a Cortex-A76 (Raspberry Pi 5's core; ARMv8.2-A with dot-product int8 and FP16
# arithmetic, no i8mm, SVE or SME; Jetson Orin's A78AE is the same class). QEMU's default "max" CPU
# also offers SVE and SME, which ONNX Runtime's ARM64 GEMM kernels then use and which QEMU emulates
# about 20x slower (the default bundle's denoiser on 16 vectors: 84 s on "max", 4.5 s on
# cortex-a76) - and which no Raspberry Pi or Jetson CPU has. QEMU_CPU=max checks those kernels.
export QEMU_CPU=${QEMU_CPU:-cortex-a76}
RESUME=${RESUME:-0}
WORK=$RFS/work
REGISTERED=0
MOUNTED=()

cleanup() {
  for m in "${MOUNTED[@]}"; do umount -l "$m" 2>/dev/null || true; done
  if mountpoint -q "$RFS/sys"; then umount -l "$RFS/sys"; fi
  if [ "$REGISTERED" = 1 ]; then echo -1 > /proc/sys/fs/binfmt_misc/qemu-aarch64 && echo "unregistered qemu-aarch64"; fi
}
trap cleanup EXIT

# 1. binfmt_misc: register qemu-aarch64 unless it is there
mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
  grep -v '^#' "$CONF" | head -1 > /proc/sys/fs/binfmt_misc/register
  REGISTERED=1
  echo "registered qemu-aarch64 (binfmt_misc)"
fi

# 2. the ARM64 root, once
if [ ! -f "$DIR/.rootfs-ready" ]; then
  echo "building the ARM64 root in $RFS (debootstrap; about 40 minutes under emulation)"
  mkdir -p "$DIR"
  nice -n 10 debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv,python3-pip bookworm "$RFS" \
    http://deb.debian.org/debian
  touch "$DIR/.rootfs-ready"
fi

# 3. the torch-free runtime from wheels: the project's own wheel and aarch64 wheels of its [cpu] deps
WHEELS=$DIR/wheels
mkdir -p "$WHEELS"
rm -f "$WHEELS"/dlsr_deploy-*.whl
"$PY" -m pip wheel -q --no-deps -w "$WHEELS" .
"$PY" -m pip download -q --only-binary=:all: --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 \
  --python-version 3.11 --implementation cp -c constraints.txt -d "$WHEELS" onnxruntime numpy pillow click tqdm
# bundles whose manifest lists only OpenVINO (the --int8-scheme openvino ones) run on OpenVINO: its
# aarch64 wheels need glibc 2.35 (manylinux_2_35; Debian bookworm has 2.36)
backend_of() { "$PY" -c "import json, sys; b = json.load(open(sys.argv[1] + '/manifest.json'))['backends']; \
print('ort-cpu' if 'ort-cpu' in b else b[0])" "$1"; }
NEED_OV=0
for b in "$@"; do [ "$(backend_of "$b")" = openvino ] && NEED_OV=1; done
if [ "$NEED_OV" = 1 ]; then
  "$PY" -m pip download -q --only-binary=:all: --platform manylinux_2_35_aarch64 --platform manylinux_2_28_aarch64 \
    --platform manylinux2014_aarch64 --python-version 3.11 --implementation cp -c constraints.txt -d "$WHEELS" openvino
fi
rm -rf "$RFS/wheels" && cp -r "$WHEELS" "$RFS/wheels"
chroot "$RFS" /bin/sh -c 'test -x /opt/dlsr/bin/python || python3 -m venv /opt/dlsr'
chroot "$RFS" /opt/dlsr/bin/pip install -q --no-index --find-links /wheels --force-reinstall --no-deps dlsr-deploy
chroot "$RFS" /opt/dlsr/bin/pip install -q --no-index --find-links /wheels 'dlsr-deploy[cpu]'
[ "$NEED_OV" = 1 ] && chroot "$RFS" /opt/dlsr/bin/pip install -q --no-index --find-links /wheels openvino

# 4. /proc inside the root, the bundles and images. Not /sys: qemu-user 7.2 passes the host's x86
# /proc/cpuinfo and /sys CPU topology through, and ONNX Runtime's cpuinfo library segfaults on the
# pair (with /proc alone it prints "cpuinfo_initialize failed" and goes on). Without cpuinfo, ORT picks its ARM64
# kernels from the auxiliary vector (AT_HWCAP / AT_HWCAP2), which QEMU fills for the CPU it
# emulates: that is what platform.json records.
for m in proc; do
  mountpoint -q "$RFS/$m" || { mount --bind "/$m" "$RFS/$m"; MOUNTED+=("$RFS/$m"); }
done
if [ "$RESUME" = 1 ]; then
  mkdir -p "$WORK/out" && find "$WORK/out" -type f ! -name '*-check.json' -delete && rm -rf "$WORK/bundles"
else
  rm -rf "$WORK"
fi
mkdir -p "$WORK/bundles" "$WORK/out"
"$PY" tests/platform/arm64/arm64_report.py images --data "$DATA" --out "$WORK/images.npz" --n "$N_IMAGES"
chroot "$RFS" /opt/dlsr/bin/python -c "import ctypes, json, platform, onnxruntime; aux = ctypes.CDLL(None).getauxval; \
aux.restype = ctypes.c_ulong; info = dict(uname=' '.join(platform.uname()), onnxruntime=onnxruntime.__version__, \
cpuinfo=open('/proc/cpuinfo').read(), hwcap=aux(16), hwcap2=aux(26)); print(json.dumps(info))" \
  > "$WORK/out/platform.json"
for b in "$@"; do
  name=$(basename "$b")
  backend=$(backend_of "$b")
  cp -r "$b" "$WORK/bundles/$name"
  echo "== $name on aarch64 (emulated), $backend"
  # OpenVINO's CPU plugin needs /sys (hwloc, and xbyak_aarch64 looks for MIDR_EL1 there: it warns and
  # goes on); ONNX Runtime's cpuinfo segfaults on the host's x86 /sys, so it is mounted only for these
  if [ "$backend" = openvino ]; then mountpoint -q "$RFS/sys" || mount --bind /sys "$RFS/sys"; fi
  if [ -f "$WORK/out/$name-check.json" ]; then
    echo "   self-check: kept from the earlier run (RESUME=1)"
  else
    chroot "$RFS" /opt/dlsr/bin/dlsr-check "/work/bundles/$name" --on-target --backend "$backend" \
      --report "/work/out/$name-check.json" --quiet || true
  fi
  chroot "$RFS" /opt/dlsr/bin/dlsr-score "/work/bundles/$name" /work/images.npz --backend "$backend" --scores all \
    --quiet --out "/work/out/$name-scores.csv" 2> "$WORK/out/$name-score.err" || true
  if mountpoint -q "$RFS/sys"; then umount -l "$RFS/sys"; fi
  .venv/bin/dlsr-score "$b" "$WORK/images.npz" --backend "$backend" --scores all --quiet \
    --out "$WORK/out/$name-x86.csv"
done
"$PY" tests/platform/arm64/arm64_report.py report --dir "$WORK/out" --stem "$STEM" "$@"
