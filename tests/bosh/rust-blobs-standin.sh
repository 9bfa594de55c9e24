#!/usr/bin/env bash
# Makes stand-ins for the rust package's four blobs in DIR/rust/ from this
# machine's toolchains, for tests/tests/bosh_packaging.rs (static.rust-lang.org
# is out of reach here):
#   rust-VERSION-x86_64-unknown-linux-gnu.tar.xz  rustup's official toolchain
#     VERSION (rustc, cargo, rust-std: the very files of Rust's installer,
#     whose manifests rustup keeps), in the installer's layout, with
#     rust-installer-standin.sh as its install.sh
#   rust-src-VERSION.tar.xz   Debian's rust-web-src library sources (with
#     library/vendor/), in the same layout
#   rustup-init-x86_64-unknown-linux-gnu  this machine's rustup (rustup-init
#     is the same program)
#   bpf-linker-x86_64-llvm22.tar.gz  made by bosh/scripts/bpf-linker-blob.sh
#
#   rust-blobs-standin.sh DIR VERSION
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=$1/rust version=$2 triple=x86_64-unknown-linux-gnu
sysroot=$(rustup run "$version" rustc --print sysroot)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"

installer="$work/rust-$version-$triple"
mkdir -p "$installer"
for component in rustc cargo "rust-std-$triple"; do
  manifest="$sysroot/lib/rustlib/manifest-${component%-$triple}-$triple"
  mkdir -p "$installer/$component"
  cp "$manifest" "$installer/$component/manifest.in"
  while IFS=: read -r _ path; do
    mkdir -p "$(dirname "$installer/$component/$path")"
    cp -a "$sysroot/$path" "$installer/$component/$path"
  done <"$manifest"
  echo "$component" >>"$installer/components"
done
echo 3 >"$installer/rust-installer-version"
install -m 0755 "$here/rust-installer-standin.sh" "$installer/install.sh"
tar -C "$work" -cf - "rust-$version-$triple" | xz -T0 -0 >"$out/rust-$version-$triple.tar.xz"

src="$work/rust-src-$version"
mkdir -p "$src/rust-src/lib/rustlib/src/rust"
cp -a /usr/lib/rustlib/src/rust/library "$src/rust-src/lib/rustlib/src/rust/library"
echo dir:lib/rustlib/src/rust/library >"$src/rust-src/manifest.in"
echo rust-src >"$src/components"
echo 3 >"$src/rust-installer-version"
install -m 0755 "$here/rust-installer-standin.sh" "$src/install.sh"
tar -C "$work" -cf - "rust-src-$version" | xz -T0 -0 >"$out/rust-src-$version.tar.xz"

install -m 0755 "$(command -v rustup)" "$out/rustup-init-$triple"
"$root/bosh/scripts/bpf-linker-blob.sh" "$(command -v bpf-linker)" "$out/bpf-linker-x86_64-llvm22.tar.gz" >/dev/null
