#!/usr/bin/env bash
# A stand-in for the install.sh of Rust's standalone installers (rust-installer
# format 3), for tests/tests/bosh_packaging.rs, which cannot download the real
# tarballs. It takes the options packages/rust/packaging passes and installs
# the same way: each selected component's manifest.in lists `file:PATH` and
# `dir:PATH` relative to the component's directory, copied to PREFIX/PATH
# (files under bin/ and executables 0755, other files 0644); unknown options
# and components are errors.
set -euo pipefail
src=$(cd "$(dirname "$0")" && pwd)
prefix=/usr/local components=
for arg in "$@"; do
  case "$arg" in
    --prefix=*) prefix=${arg#--prefix=} ;;
    --components=*) components=${arg#--components=} ;;
    --disable-ldconfig) ;;
    *) echo "install: error: Option '$arg' is not recognized" >&2; exit 1 ;;
  esac
done
available=$(cat "$src/components")
[ -n "$components" ] || components=$(echo $available | tr ' ' ,)
mkdir -p "$prefix/lib/rustlib"
for component in ${components//,/ }; do
  grep -qx "$component" "$src/components" || { echo "install: error: unknown component: $component" >&2; exit 1; }
  echo "install: installing component '$component'"
  while IFS=: read -r kind path; do
    mkdir -p "$(dirname "$prefix/$path")"
    case "$kind" in
      file)
        cp "$src/$component/$path" "$prefix/$path"
        if [[ $path == bin/* ]] || [ -x "$src/$component/$path" ]; then chmod 755 "$prefix/$path"; else chmod 644 "$prefix/$path"; fi ;;
      dir) cp -R "$src/$component/$path" "$prefix/$path"; chmod -R u+rwX,go+rX,go-w "$prefix/$path" ;;
      *) echo "install: error: unknown installation directive" >&2; exit 1 ;;
    esac
  done <"$src/$component/manifest.in"
  echo "$component" >>"$prefix/lib/rustlib/components"
done
echo 3 >"$prefix/lib/rustlib/rust-installer-version"
