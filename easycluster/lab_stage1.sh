#!/bin/sh
# First process of a lab host (PID 1 of its own PID namespace, inside its own
# network, mount and UTS namespaces), still on the machine's filesystem.
# Builds the host's root: overlay of the base root filesystem (lower, shared,
# read-only) and the host's private disk (upper); then pivots into it and
# hands over to /sbin/lab-init of the host.   Args: HOSTNAME BASE_ROOTFS HOST_DIR
set -eu
name=$1 lower=$2 dir=$3
root=$dir/merged
hostname "$name"
mount --make-rprivate /
mount -t overlay overlay -o "lowerdir=$lower,upperdir=$dir/upper,workdir=$dir/work" "$root"
mount -t proc proc "$root/proc"
# /proc/sys is mostly not namespaced: a host must never change the machine's kernel settings
mount --bind "$root/proc/sys" "$root/proc/sys"
mount -o remount,bind,ro "$root/proc/sys"
mount -t sysfs -o ro sysfs "$root/sys"
mount -t tmpfs -o mode=755,size=8m tmpfs "$root/dev"
for n in null zero full random urandom tty; do
  : > "$root/dev/$n"
  mount --bind "/dev/$n" "$root/dev/$n"
done
mkdir -p "$root/dev/pts" "$root/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$root/dev/pts"
ln -s pts/ptmx "$root/dev/ptmx"
ln -s /proc/self/fd "$root/dev/fd"
ln -s /proc/self/fd/0 "$root/dev/stdin"
ln -s /proc/self/fd/1 "$root/dev/stdout"
ln -s /proc/self/fd/2 "$root/dev/stderr"
mount -t tmpfs -o mode=1777,size=64m tmpfs "$root/dev/shm"
mount -t tmpfs -o mode=755,size=64m tmpfs "$root/run"
mount -t tmpfs -o mode=1777,size=512m tmpfs "$root/tmp"
mkdir -p "$root/.lab-oldroot"
cd "$root"
pivot_root . .lab-oldroot
exec /sbin/lab-init
