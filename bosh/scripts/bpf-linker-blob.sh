#!/usr/bin/env bash
# Makes the rust package's bpf-linker blob: bin/bpf-linker and, in llvm/lib/,
# libLLVM 22 with every library it and bpf-linker load that is not part of
# the C/C++ runtime (libc, libm, libgcc_s, libstdc++, the loader), which every
# stemcell has.
#
#   bosh/scripts/bpf-linker-blob.sh [BPF_LINKER] [OUTPUT]
#     BPF_LINKER: default `command -v bpf-linker`
#     OUTPUT:     default bosh/bpf-linker-x86_64-llvm22.tar.gz
#   bosh add-blob bosh/bpf-linker-x86_64-llvm22.tar.gz rust/bpf-linker-x86_64-llvm22.tar.gz
#
# Run it on the stemcell's OS release (ubuntu-jammy: a jammy container with
# apt.llvm.org's llvm-22-dev, then `cargo install bpf-linker
# --no-default-features --features llvm-22`): the libraries it copies must
# not need a newer glibc than the compilation VMs have.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
linker=${1:-$(command -v bpf-linker || true)}
output=${2:-$root/bosh/bpf-linker-x86_64-llvm22.tar.gz}
case "$output" in /*) ;; *) output="$PWD/$output" ;; esac
if [ -z "$linker" ] || [ ! -x "$linker" ]; then
  echo "bpf-linker-blob.sh: no bpf-linker (give its path, or install it as docs/toolchain.md says)" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bin" "$work/llvm/lib"
install -m 0755 "$linker" "$work/bin/bpf-linker"
ldd "$linker" | grep 'libLLVM\.so\.22' >/dev/null || {
  echo "bpf-linker-blob.sh: $linker does not link libLLVM.so.22" >&2
  exit 1
}
# Every library the loader resolves for bpf-linker (libLLVM's included).
ldd "$linker" | awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 }' | while read -r name path; do
  case "$name" in
    libc.so.*|libm.so.*|libgcc_s.so.*|libstdc++.so.*|ld-linux*|libpthread.so.*|libdl.so.*|librt.so.*) ;;
    *) cp -L "$path" "$work/llvm/lib/$name" ;;
  esac
done
tar -C "$work" -czf "$output" bin llvm
echo "wrote $output"
