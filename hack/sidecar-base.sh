#!/usr/bin/env bash
# Unpacks the sidecar image's base into DIR: Debian's iptables package and
# its dependencies (libc included), what `apt-get install iptables` adds to
# debian:bookworm-slim in build/sidecar.Dockerfile, downloaded from the
# machine's Debian mirror. hack/images lays it out as bookworm does.
#   hack/sidecar-base.sh .tools/sidecar-base
set -euo pipefail
dir=${1:?usage: sidecar-base.sh DIR}
rm -rf "$dir.tmp" && mkdir -p "$dir.tmp/debs" "$dir.tmp/rootfs"
closure() {
  apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
    --no-breaks --no-replaces --no-enhances iptables | grep '^[a-z0-9]' | sort -u
}
pkgs=$(closure)
if ! (cd "$dir.tmp/debs" && apt-get download -qq $pkgs); then
  apt-get update -qq
  pkgs=$(closure)
  (cd "$dir.tmp/debs" && apt-get download -qq $pkgs)
fi
for d in "$dir.tmp"/debs/*.deb; do dpkg-deb -x "$d" "$dir.tmp/rootfs"; done
ls "$dir.tmp/debs" > "$dir.tmp/rootfs/.packages"
rm -rf "$dir" && mv "$dir.tmp/rootfs" "$dir" && rm -rf "$dir.tmp"
echo "sidecar base: $(wc -l < "$dir/.packages") Debian packages in $dir"
