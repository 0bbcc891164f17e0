# shellcheck shell=bash
# node-exporter enabled and (re)started on a database host, with the settings easycluster wrote.
set -e
systemctl enable --quiet prometheus-node-exporter
systemctl restart prometheus-node-exporter
echo "started"
