#!/usr/bin/env bash
# Cross-builds nasrt for aarch64 (library, native tests, tools, the examples
# against the installed package) and runs them under qemu-aarch64-static on 1
# and 2 threads, checking the logits against the x86 ones (tests/data).
#
#   bash tools/cross-aarch64.sh          # build dir: build/aarch64 (BUILD_DIR=... to change)
#
# Needs (Debian): crossbuild-essential-arm64 qemu-user-static cmake. The arm64
# XNNPACK is never apt-get installed (it would remove the amd64 one): its
# packages are downloaded and extracted into a sysroot under the build dir.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=${BUILD_DIR:-$ROOT/build/aarch64}
mkdir -p "$B" && B=$(cd "$B" && pwd)  # absolute: the Python checks below run from it
SYSROOT=$B/sysroot
LIMIT=${QEMU_TIMEOUT:-300}   # seconds per emulated program: a hang fails loudly
log() { printf '[cross-aarch64] %s\n' "$*"; }

for tool in aarch64-linux-gnu-g++ qemu-aarch64-static cmake; do
  command -v "$tool" >/dev/null || { echo "cross-aarch64: $tool missing: apt-get install crossbuild-essential-arm64 qemu-user-static cmake" >&2; exit 2; }
done

if [ ! -f "$SYSROOT/.done" ]; then
  log "sysroot: downloading arm64 XNNPACK, pthreadpool, cpuinfo (+ nlohmann-json headers)"
  rm -rf "$SYSROOT" "$B/debs"; mkdir -p "$SYSROOT" "$B/debs"
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then  # lets apt see arm64 packages; installs nothing
    dpkg --add-architecture arm64 && apt-get update -qq
  elif ! apt-cache show libxnnpack0:arm64 >/dev/null 2>&1; then
    apt-get update -qq
  fi
  (cd "$B/debs" && apt-get download -q libxnnpack0:arm64 libxnnpack-dev:arm64 libpthreadpool0:arm64 \
      libpthreadpool-dev:arm64 libcpuinfo0:arm64 nlohmann-json3-dev >/dev/null)
  for d in "$B"/debs/*.deb; do dpkg-deb -x "$d" "$SYSROOT"; done
  # One C library only: the cross toolchain's. Nothing from the debs may bring another.
  if find "$SYSROOT" -name 'libc.so*' -o -name 'ld-linux-aarch64*' | grep -q .; then
    echo "cross-aarch64: the sysroot holds a second C library; refusing" >&2; exit 1
  fi
  touch "$SYSROOT/.done"
fi

log "configure + build (XNNPACK backend; oneDNN is x86-only here)"
cmake -S "$ROOT" -B "$B/build" -DCMAKE_TOOLCHAIN_FILE="$ROOT/cmake/aarch64-linux-gnu.cmake" \
  -DNASRT_SYSROOT="$SYSROOT" -DNASRT_WITH_XNNPACK=ON -DNASRT_WITH_ONEDNN=OFF -DCMAKE_BUILD_TYPE=Release >"$B/configure.log"
cmake --build "$B/build" -j"$(nproc)" >"$B/build.log"
cmake --install "$B/build" --prefix "$B/prefix" >/dev/null
log "examples against the installed package"
cmake -S "$ROOT/examples" -B "$B/examples" -DCMAKE_TOOLCHAIN_FILE="$ROOT/cmake/aarch64-linux-gnu.cmake" \
  -DNASRT_SYSROOT="$SYSROOT" -DCMAKE_PREFIX_PATH="$B/prefix" >"$B/examples-configure.log"
cmake --build "$B/examples" -j"$(nproc)" >"$B/examples-build.log"

run() {  # an aarch64 program under qemu, with the cross libc and the sysroot's libraries
  QEMU_LD_PREFIX=/usr/aarch64-linux-gnu LD_LIBRARY_PATH="$SYSROOT/usr/lib/aarch64-linux-gnu" \
    timeout "$LIMIT" qemu-aarch64-static "$@"
}
aarch64-linux-gnu-readelf -h "$B/build/nasrt_native_tests" | grep -q AArch64 || { echo "cross-aarch64: not an aarch64 binary" >&2; exit 1; }
log "native tests under qemu (1 and 2 threads, logits vs x86 within 1e-4, 300 fresh 2-thread executors)"
run "$B/build/nasrt_native_tests" "$ROOT/tests/data" 300
for t in 1 2; do
  run "$B/examples/classify_c" "$ROOT/tests/data/tiny.nasrt" "$ROOT/tests/data/tiny_input.bin" "$t" "$B/logits$t.bin"
done
cmp "$B/logits1.bin" "$B/logits2.bin" || { echo "cross-aarch64: 1 and 2 threads differ" >&2; exit 1; }
run "$B/build/nasrt-bench" "$ROOT/tests/data/tiny.nasrt" --runs 40 --warmup 5 --rounds 2 | tail -4
# The int8 board check: the int8 fixture on XNNPACK (qc8) and the reference kernels, 1 and 2
# threads. nasrt_native_tests above compared its logits with the x86 ones (same top-1, within
# 2 LSB of every input of the last FC); here the installed tool runs it as a user would.
log "int8 board check: tests/data/fuzz/tiny.int8.nasrt on xnnpack and reference, 1 and 2 threads (nasrt-run)"
for b in xnnpack reference; do
  for t in 1 2; do
    run "$B/build/nasrt-run" "$ROOT/tests/data/fuzz/tiny.int8.nasrt" "$ROOT/tests/data/tiny_int8_inputs.bin" \
      --backend "$b" --threads "$t" --top-k 1 --logits "$B/int8_$b$t.bin" >/dev/null
  done
  cmp "$B/int8_${b}1.bin" "$B/int8_${b}2.bin" || { echo "cross-aarch64: int8 $b: 1 and 2 threads differ" >&2; exit 1; }
done
cmp "$B/int8_xnnpack1.bin" "$ROOT/tests/data/tiny_int8_logits.bin" \
  && log "int8: xnnpack logits bitwise the x86 ones" \
  || log "int8: xnnpack logits not bitwise the x86 ones (within the native tests' bound)"
log "nasrt-profile under qemu: a kit of a tiny space (written on the host), fp32 and int8"
PY=${PYTHON:-python3}
# Python runs from the build dir: from the source root, `-m`/`-c` would import the source tree's
# nasrt (no compiled core) instead of the installed package.
cd "$B"
printf '{"paths": 2, "channels": [4], "strides": [1], "ops": ["conv3x3"], "merge": "sum", "stem_kernel": null, "hidden": []}' >"$B/kit-space.json"
for prec in fp32 int8; do
  "$PY" -m nasrt.cli profile --space "$B/kit-space.json" --input 4,6,6 --classes 3 --precision "$prec" \
    --threads 2 --runs 4 --rounds 2 --warmup 1 --span 0 --kit "$B/kit-$prec" >/dev/null
  run "$B/build/nasrt-profile" "$B/kit-$prec" --out "$B/lut-$prec.json" --quiet
  "$PY" -c "import sys; from nasrt.contract.lut import load_lut; t = load_lut(sys.argv[1]); \
assert t.precision == sys.argv[2] and t.settings['caller'] == 'c' and t.machine['isa'] == 'neon', t.machine; \
print(sys.argv[1], t.precision, t.machine['machine'], t.backend, 'ops_us', t.ops_us)" "$B/lut-$prec.json" "$prec"
done
log "passed"
