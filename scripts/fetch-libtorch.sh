#!/usr/bin/env bash
# Provide libtorch 2.13.0 (the version tch 0.26 is built against) for this checkout.
#
# Routes, in order of precedence:
#   1. LIBTORCH or LIBTORCH_USE_PYTORCH already set: use it, change nothing.
#   2. --url URL or --zip FILE: unpack an official libtorch archive into the cache.
#   3. default: `pip install --target` of torch==2.13.0 from the Python package
#      registry into a per-user cache. The wheel carries libtorch (lib/, include/)
#      and its CUDA runtime libraries; about 4.7 GB installed.
#
# Either way the checkout gets a `.libtorch` link to the install, which
# .cargo/config.toml hands to the torch-sys build as LIBTORCH (a LIBTORCH set in
# the environment still wins). A second run finds the install and returns at once.
#
# Cache root: $BINADD_CACHE, else ${XDG_CACHE_HOME:-$HOME/.cache}/binadd.
set -euo pipefail

TORCH_VERSION=2.13.0
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache_root=${BINADD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/binadd}
link="$repo_root/.libtorch"

usage() {
    cat <<USAGE
usage: scripts/fetch-libtorch.sh [--url URL | --zip FILE]

  (no option)  install torch==$TORCH_VERSION from the Python package registry
               into $cache_root/libtorch-$TORCH_VERSION
  --url URL    download an official libtorch $TORCH_VERSION zip archive and unpack it
  --zip FILE   unpack a libtorch $TORCH_VERSION zip archive already on disk
USAGE
}

archive_url=""
archive_zip=""
while [ $# -gt 0 ]; do
    case "$1" in
        --url) archive_url=${2:?--url needs a URL}; shift 2 ;;
        --zip) archive_zip=${2:?--zip needs a file path}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "error: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done

if [ -n "${LIBTORCH:-}" ]; then
    echo "LIBTORCH is set to '$LIBTORCH'; using it and changing nothing."
    exit 0
fi
if [ -n "${LIBTORCH_USE_PYTORCH:-}" ]; then
    echo "LIBTORCH_USE_PYTORCH is set; tch will use the PyTorch of 'python3'. Changing nothing."
    exit 0
fi

link_checkout() {
    local target=$1
    ln -sfn "$target" "$link"
    echo "linked $link -> $target"
}

# Archive route: the zip contains a top-level libtorch/ folder.
# NOTE: checked with a locally built zip only; no official archive was reachable
# from the machines this was written on.
if [ -n "$archive_url" ] || [ -n "$archive_zip" ]; then
    dest="$cache_root/libtorch-$TORCH_VERSION-archive"
    if [ -f "$dest/libtorch/lib/libtorch.so" ]; then
        echo "found libtorch archive install in $dest/libtorch"
        link_checkout "$dest/libtorch"
        exit 0
    fi
    mkdir -p "$cache_root"
    tmp=$(mktemp -d "$cache_root/.archive.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    if [ -n "$archive_url" ]; then
        echo "downloading $archive_url"
        curl -fL --retry 3 -o "$tmp/libtorch.zip" "$archive_url"
        archive_zip="$tmp/libtorch.zip"
    fi
    [ -f "$archive_zip" ] || { echo "error: archive '$archive_zip' not found" >&2; exit 1; }
    python3 -m zipfile -e "$archive_zip" "$tmp/unpacked"
    if [ ! -f "$tmp/unpacked/libtorch/lib/libtorch.so" ]; then
        echo "error: '$archive_zip' has no libtorch/lib/libtorch.so; is it a libtorch archive?" >&2
        exit 1
    fi
    if [ -f "$tmp/unpacked/libtorch/build-version" ]; then
        found=$(cut -d+ -f1 < "$tmp/unpacked/libtorch/build-version")
        if [ "$found" != "$TORCH_VERSION" ]; then
            echo "error: archive contains libtorch $found, but tch 0.26 needs $TORCH_VERSION" >&2
            exit 1
        fi
    fi
    # zipfile does not keep permission bits; the libraries only need to be readable.
    rm -rf "$dest"
    mv "$tmp/unpacked" "$dest"
    echo "installed libtorch $TORCH_VERSION from archive into $dest/libtorch"
    link_checkout "$dest/libtorch"
    exit 0
fi

# Default route: the PyPI wheel, installed once per user.
dest="$cache_root/libtorch-$TORCH_VERSION"
marker="$dest/.binadd-complete"
if [ -f "$marker" ] && [ -f "$dest/torch/lib/libtorch.so" ]; then
    echo "found torch $TORCH_VERSION in $dest (libtorch at $dest/torch)"
    link_checkout "$dest/torch"
    exit 0
fi

mkdir -p "$cache_root"
tmp=$(mktemp -d "$cache_root/.pip.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
echo "installing torch==$TORCH_VERSION from the Python package registry into $dest (about 4.7 GB, 1-2 minutes)"
python3 -m pip install --quiet --no-cache-dir --disable-pip-version-check --root-user-action=ignore \
    --target "$tmp" "torch==$TORCH_VERSION"
if [ ! -f "$tmp/torch/lib/libtorch.so" ]; then
    echo "error: pip finished but $tmp/torch/lib/libtorch.so is missing" >&2
    exit 1
fi
touch "$tmp/.binadd-complete"

# Rename into place so an interrupted install never looks complete.
rm -rf "$dest"
mv "$tmp" "$dest"
trap - EXIT
echo "installed torch $TORCH_VERSION into $dest (libtorch at $dest/torch)"
link_checkout "$dest/torch"
