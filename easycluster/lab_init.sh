#!/bin/sh
# /sbin/lab-init of a lab host: what init does on a Debian server, minus systemd.
# Drops the machine's filesystem, starts the enabled SysV services, then becomes
# tini (PID 1, reaps orphans) supervising sshd: sshd's death powers the host off.
umount -l /.lab-oldroot && rmdir /.lab-oldroot
mkdir -p /run/sshd /run/lock
chmod 1777 /run/lock
: > /run/utmp
for service in /etc/rc2.d/S*; do
  [ -x "$service" ] || continue
  case "${service##*/S[0-9][0-9]}" in ssh|procps|hwclock.sh|rsync) continue ;; esac
  echo "$(date -Is) lab-init: $service start" >> /var/log/lab-boot.log
  "$service" start < /dev/null >> /var/log/lab-boot.log 2>&1 ||
    echo "$(date -Is) lab-init: $service failed" >> /var/log/lab-boot.log
done
exec /usr/bin/tini -- /usr/sbin/sshd -D -e
