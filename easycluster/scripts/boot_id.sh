# shellcheck shell=bash
# Which boot this is: the kernel's boot id and when PID 1 started (in clock ticks since the
# kernel booted), so that a container's reboot, under the same kernel, counts as one too.
echo "boot=$(cat /proc/sys/kernel/random/boot_id) $(cut -d' ' -f22 /proc/1/stat)"
