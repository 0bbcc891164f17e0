# shellcheck shell=bash
# A reboot, a second from now (a timer of systemd's), so that this SSH command returns first;
# first, which boot this is (the one the caller waits to see replaced).
set -e
ec_boot_id
systemd-run --quiet --on-active=1 --timer-property=AccuracySec=100ms systemctl reboot
echo "rebooting=1"
