#!/usr/bin/env bash
# The built-in demo: read the two real ESXi volumes through our tools and a FUSE mount, and show
# that the C reader (vmfs-fuse / vmfs6-fuse) sees the same bytes.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
shared="${VMFS_SHARED:-$here/../shared}"
work="$here/demo"
mkdir -p "$work"
cleanup() { for m in "$work"/mnt-*; do fusermount -u "$m" 2>/dev/null || true; done; }
trap cleanup EXIT

for v in vmfs5 vmfs6; do
    img="$work/$v.img"
    [ -f "$img" ] || gunzip -c "$shared/fixtures/real/$v.bin.gz" > "$img"
    echo "=== $v: FS descriptor, extents, heartbeats, resources"
    vmfs-debug "$img" fs
    vmfs-debug "$img" lvm
    vmfs-debug "$img" heartbeats
    vmfs-debug "$img" resources
    echo "=== $v: mounted read-only with vmfs-mount"
    mkdir -p "$work/mnt-$v" "$work/mnt-$v-oracle"
    vmfs-mount "$img" "$work/mnt-$v"
    ls -la "$work/mnt-$v" "$work/mnt-$v/directory"
    df -h "$work/mnt-$v"
    oracle=vmfs-fuse; [ "$v" = vmfs6 ] && oracle=vmfs6-fuse
    "$oracle" "$img" "$work/mnt-$v-oracle"
    echo "=== $v: comparing every file with $oracle"
    (cd "$work/mnt-$v/directory" && sha256sum file* && readlink symlink)
    diff -r "$work/mnt-$v/directory" "$work/mnt-$v-oracle/directory" && echo "identical to $oracle"
    fusermount -u "$work/mnt-$v"; fusermount -u "$work/mnt-$v-oracle"
done
echo "demo finished"
