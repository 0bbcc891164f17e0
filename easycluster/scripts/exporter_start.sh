# shellcheck shell=bash
# node-exporter enabled and (re)started on a database host, with the settings easycluster wrote.
set -e
ec_exporter_start
echo "started"
