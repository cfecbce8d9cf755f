#!/usr/bin/env bash
# Packs egressd from a clean copy of the checkout and prints the tarball's path.
#
#   packaging/npm-pack.sh OUTDIR
#
# Why a copy: `npm pack` runs `prepack` (the build), which rewrites dist/ in place; tests
# that spawn dist/cli.js may be running beside it. The copy holds the files git knows
# (tracked and new, not ignored), with the checkout's node_modules linked in for the
# compiler, so what is packed is what a fresh clone would pack.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:?usage: npm-pack.sh OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/egressd-pack.XXXXXX")
trap 'rm -rf "$work"' EXIT

cd "$root"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  # -z: names with spaces survive; deleted files that are still tracked are skipped by tar's --ignore-failed-read.
  git ls-files -z -co --exclude-standard | tar --null -T - --ignore-failed-read -cf - | tar -xf - -C "$work"
else
  tar --exclude=./node_modules --exclude=./dist --exclude=./build --exclude=./dist-pkg --exclude=./.git -cf - . | tar -xf - -C "$work"
fi
[ -d "$root/node_modules" ] || { echo "npm-pack.sh: run npm ci first (the build needs typescript)" >&2; exit 1; }
ln -s "$root/node_modules" "$work/node_modules"
cd "$work"
name=$(npm pack --silent --pack-destination "$out" | tail -n 1)
echo "$out/$name"
