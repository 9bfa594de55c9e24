#!/usr/bin/env bash
# Makes the source blob of the pcap package: the workspace's files (tracked,
# and untracked but not ignored; not bosh/ itself) plus every crate they use
# in vendor/ (`cargo vendor`), and a .cargo/config.toml that replaces
# crates.io with that directory, so that packages/pcap/packaging builds with
# no network.
#
#   bosh/scripts/vendor.sh [OUTPUT]      # default: bosh/pcap-src.tar.gz
#   bosh add-blob bosh/pcap-src.tar.gz pcap/pcap-src.tar.gz   (in bosh/)
#
# Vendoring uses cargo's cache when it holds every crate, else downloads.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
output=${1:-$root/bosh/pcap-src.tar.gz}
case "$output" in /*) ;; *) output="$PWD/$output" ;; esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
src="$work/pcap-src"
mkdir -p "$src"

git -C "$root" ls-files -z --cached --others --exclude-standard -- . ':!:bosh' \
  | (cd "$root" && while IFS= read -r -d '' file; do
       # Tracked files deleted in the working tree are not part of it.
       [ -e "$file" ] && printf '%s\0' "$file"
     done) \
  | tar -C "$root" --null -T - -cf - \
  | tar -C "$src" -xf -

cd "$src"
if ! cargo vendor --locked --versioned-dirs --offline vendor > "$work/sources.toml" 2> "$work/vendor.log"; then
  echo "vendor.sh: cargo's cache lacks some crates; downloading them" >&2
  cargo vendor --locked --versioned-dirs vendor > "$work/sources.toml"
fi
mkdir -p .cargo
{
  [ -f .cargo/config.toml ] && cat .cargo/config.toml && echo
  echo "# Added by bosh/scripts/vendor.sh: build from vendor/ only."
  cat "$work/sources.toml"
} > "$work/config.toml"
mv "$work/config.toml" .cargo/config.toml
grep -q 'directory = "vendor"' .cargo/config.toml

mkdir -p "$(dirname "$output")"
tar -C "$work" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
  -czf "$output.tmp" pcap-src
mv "$output.tmp" "$output"
echo "vendor.sh: wrote $output ($(du -h "$output" | cut -f1))" >&2
