#!/usr/bin/env bash
# Builds dist-pkg/egressd_X.Y.Z_all.deb with dpkg-deb (`npm run package:deb`).
#
# The code is the npm tarball (packaging/npm-pack.sh, so the .deb holds exactly what
# `npm pack` ships) plus production node_modules installed from package-lock.json; npm
# is the only network use. Output directory: $EGRESSD_DEB_OUT, default dist-pkg/.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
here="$root/packaging/deb"
out=${EGRESSD_DEB_OUT:-$root/dist-pkg}
command -v dpkg-deb >/dev/null || { echo "build.sh: dpkg-deb not found (Debian package dpkg)" >&2; exit 1; }

version=$(node -p "require('$root/package.json').version")
changelog_version=$(sed -nE '1s/^egressd \(([^)]+)\).*/\1/p' "$here/changelog")
if [ "$version" != "$changelog_version" ]; then
  echo "build.sh: package.json says $version, packaging/deb/changelog says $changelog_version: add a changelog entry" >&2
  exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/egressd-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
stage="$work/egressd_${version}_all"
lib="$stage/usr/lib/egressd"
doc="$stage/usr/share/doc/egressd"
share="$stage/usr/share/egressd"

tgz=$("$root/packaging/npm-pack.sh" "$work/npm")
mkdir -p "$lib"
tar -xzf "$tgz" -C "$lib" --strip-components=1 --no-same-owner
cp "$root/package-lock.json" "$lib/"
( cd "$lib" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --prefer-offline --loglevel=error >/dev/null )
rm -f "$lib/package-lock.json" "$lib/node_modules/.package-lock.json"
# copyright first: it quotes the license files the pruning below removes.
mkdir -p "$doc"
node "$here/copyright.mjs" "$lib" > "$doc/copyright"
# What the dependencies ship for their own development (tests, docs, type declarations,
# CI and editor files, sample pages loading scripts from CDNs) is not run by egressd.
find "$lib/node_modules" -depth -type d \( -name test -o -name tests -o -name __tests__ -o -name docs \
  -o -name .husky -o -name .github -o -name benchmarks -o -name bench -o -name example -o -name examples \) -exec rm -rf {} +
find "$lib/node_modules" -type f \( -iname '*.md' -o -iname 'licen[cs]e*' -o -name '*.html' -o -name '*.d.ts' \
  -o -name '*.d.mts' -o -name '*.d.cts' -o -name '*.map' -o -name '*.sh' -o -name '.*' -o -name '*.tsbuildinfo' \) -delete

# Documentation and service files go where Debian keeps them, not beside the code.
mkdir -p "$doc" "$share/nftables" "$share/systemd" "$stage/lib/systemd/system" "$stage/etc/egressd" "$stage/usr/bin" "$stage/DEBIAN"
for f in "$lib"/docs/*.md "$lib/README.md"; do gzip -9n -c "$f" > "$doc/$(basename "$f").gz"; done
rm -rf "$lib/docs" "$lib/README.md" "$lib/LICENSE" "$lib/systemd"
gzip -9n -c "$here/changelog" > "$doc/changelog.gz"
cp "$root/systemd/egressd.service" "$stage/lib/systemd/system/egressd.service"
cp "$root/systemd/egressd-nft.conf" "$share/systemd/egressd-nft.conf"
cp "$root/config/nftables/egressd.nft" "$share/nftables/egressd.nft"
cp "$here/egressd.yaml" "$stage/etc/egressd/egressd.yaml"
ln -s ../lib/egressd/dist/cli.js "$stage/usr/bin/egressd"

# Debian's modes: 0644 files, 0755 directories and the programs; owners root via --root-owner-group.
find "$stage" -type d -exec chmod 0755 {} +
find "$stage" -type f -exec chmod 0644 {} +
chmod 0755 "$lib/dist/cli.js"
# Scripts keep their execute bit: the ruleset is run as `nft -f FILE` or directly, and a
# dependency's own command-line tool (pino, yaml, tldts) may be run by hand.
grep -rlIZ --include='*' -m1 '^#!' "$lib/node_modules" "$lib/config/nftables" "$share/nftables" 2>/dev/null \
  | xargs -0 -r sh -c 'for f; do head -c2 "$f" | grep -q "#!" && chmod 0755 "$f"; done' sh
mkdir -p "$stage/usr/share/man/man1"
gzip -9n -c "$here/egressd.1" > "$stage/usr/share/man/man1/egressd.1.gz"
chmod 0644 "$stage/usr/share/man/man1/egressd.1.gz"

size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@SIZE@/$size/" "$here/control.in" > "$stage/DEBIAN/control"
cp "$here/conffiles" "$stage/DEBIAN/conffiles"
install -m 0755 "$here/postinst" "$here/prerm" "$here/postrm" "$stage/DEBIAN/"
( cd "$stage" && find . -path ./DEBIAN -prune -o -path ./etc -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum ) > "$stage/DEBIAN/md5sums"
chmod 0644 "$stage/DEBIAN/control" "$stage/DEBIAN/conffiles" "$stage/DEBIAN/md5sums"

mkdir -p "$out"
deb="$out/egressd_${version}_all.deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb"
