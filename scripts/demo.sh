#!/usr/bin/env bash
# The built-in demo (`make demo`):
#   1. read the two real ESXi volumes through our tools and a read-only FUSE mount, and check
#      every byte against vmfs-tools' own FUSE reader;
#   2. make a VMFS5 datastore, put a virtual machine on it (a thin VMDK made by vmfs-vmdk inside
#      the volume, a .vmx written through a read-write mount, guest data written into the disk),
#      unmount with vmfs-umount (back when all is on disk), then read it all back with
#      vmfs-tools, qemu-img and vmfs-fsck;
#   3. boot a simulated ESX host (hostsim) on a blank image: four VMs compete for CPU, memory and
#      disk for two minutes; print the esxtop summary, write the plot, leave the datastore image.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
shared="${VMFS_SHARED:-$here/../shared}"
work="$here/demo"
mkdir -p "$work"
cleanup() { for m in "$work"/mnt-*; do vmfs-umount "$m" 2>/dev/null || true; done; }
trap cleanup EXIT
say() { printf '\n=== %s\n' "$*"; }

for v in vmfs5 vmfs6; do
    img="$work/$v.img"
    [ -f "$img" ] || gunzip -c "$shared/fixtures/real/$v.bin.gz" > "$img"
    say "$v (made by ESXi): FS descriptor, extents, heartbeats, resources"
    vmfs-debug "$img" fs
    vmfs-debug "$img" lvm
    vmfs-debug "$img" heartbeats
    vmfs-debug "$img" resources
    say "$v: mounted read-only with vmfs-mount"
    mkdir -p "$work/mnt-$v" "$work/mnt-$v-oracle"
    vmfs-mount "$img" "$work/mnt-$v"
    ls -la "$work/mnt-$v" "$work/mnt-$v/directory"
    df -h "$work/mnt-$v"
    oracle=vmfs-fuse; [ "$v" = vmfs6 ] && oracle=vmfs6-fuse
    "$oracle" "$img" "$work/mnt-$v-oracle"
    say "$v: every file compared with $oracle"
    diff -r "$work/mnt-$v/directory" "$work/mnt-$v-oracle/directory" && echo "identical to $oracle"
    vmfs-umount "$work/mnt-$v"; fusermount -u "$work/mnt-$v-oracle"
done

ds="$work/datastore.img"
rm -f "$ds"
say "a new 8 GiB VMFS5 datastore"
vmfs-mkfs -t vmfs5 --size 8G -L demo-datastore "$ds"
say "a 2 GiB thin virtual disk inside the volume, no mount needed"
vmfs-vmdk --volume "$ds" -p -c 2G -d thin /vms/demo-vm/demo-vm.vmdk
say "the VM's other files and guest data through a read-write mount"
mkdir -p "$work/mnt-rw"
vmfs-mount -o rw "$ds" "$work/mnt-rw"
vm="$work/mnt-rw/vms/demo-vm"
cat > "$vm/demo-vm.vmx" <<VMX
.encoding = "UTF-8"
config.version = "8"
virtualHW.version = "4"
displayName = "demo-vm"
memsize = "256"
scsi0.present = "TRUE"
scsi0.virtualDev = "lsilogic"
scsi0:0.present = "TRUE"
scsi0:0.fileName = "demo-vm.vmdk"
guestOS = "other26xlinux"
VMX
printf 'guest data written at 1 GiB\n' | dd of="$vm/demo-vm-flat.vmdk" bs=1M seek=1024 conv=notrunc status=none
head -c 3M /dev/urandom > "$vm/nvram"
ls -la "$vm"
df -h "$work/mnt-rw"
# vmfs-umount returns once everything is on disk and the heartbeat slot is released
# (fusermount -u returns while the mount process is still writing back)
vmfs-umount -v "$work/mnt-rw"
vmfs-debug "$ds" heartbeats
say "read back by vmfs-tools (vmfs-fuse), qemu-img and our checker"
mkdir -p "$work/mnt-oracle"
vmfs-fuse "$ds" "$work/mnt-oracle"
ls -la "$work/mnt-oracle/vms/demo-vm"
qemu-img info "$work/mnt-oracle/vms/demo-vm/demo-vm.vmdk"
echo "vmfs-fuse reads at 1 GiB: $(dd if="$work/mnt-oracle/vms/demo-vm/demo-vm-flat.vmdk" bs=1 skip=$((1 << 30)) count=27 status=none)"
fusermount -u "$work/mnt-oracle"
vmfs-vmdk --volume "$ds" -D /vms/demo-vm/demo-vm.vmdk
vmfs-fsck -n "$ds" && echo "vmfs-fsck: clean"

say "a simulated ESX host (hostsim) boots on a blank 8 GiB image and runs five VMs under contention"
sim="$work/hostsim"
rm -rf "$sim"
cp -r "$here/hostsim/examples" "$sim"
truncate -s 8G "$sim/datastore.img"
hostsim run "$sim/demo.scenario" --out "$sim/out"
say "the VMs' files on the datastore the host left (mounted read-only with vmfs-mount)"
mkdir -p "$work/mnt-sim"
vmfs-mount "$sim/datastore.img" "$work/mnt-sim"
ls -la "$work/mnt-sim" "$work/mnt-sim/db1"
echo "log1's first sector, as its guest wrote it: $(head -c 25 "$work/mnt-sim/log1/log1-flat.vmdk")"
qemu-img info "$work/mnt-sim/db1/db1-000001.vmdk" | head -4
vmfs-umount "$work/mnt-sim"
vmfs-fsck -n "$sim/datastore.img" && echo "vmfs-fsck: clean"
echo "esxtop batch CSV, plot, summary and event log in $sim/out; the datastore image is $sim/datastore.img"
echo "demo finished"
