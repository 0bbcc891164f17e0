# shellcheck shell=bash
# After easycluster's files were written on the monitoring host: checked with Prometheus's and
# Alertmanager's own tools, then the units enabled and made to read them (a reload: Prometheus
# keeps its data and its alerts' state), and waited for until each answers on its port.
# params: PROMETHEUS_CONFIG ALERTMANAGER_CONFIG PROMETHEUS_PORT ALERTMANAGER_PORT BOUND
set -e
out=$(promtool check config "$PROMETHEUS_CONFIG" 2>&1) || { echo "$out"; exit 1; }
out=$(amtool check-config "$ALERTMANAGER_CONFIG" 2>&1) || { echo "$out"; exit 1; }
ec_exporter_start
for u in prometheus-alertmanager prometheus; do
  systemctl enable --quiet "$u"
  if systemctl is-active --quiet "$u"; then systemctl reload "$u"; else systemctl restart "$u"; fi
done
answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in "$PROMETHEUS_PORT" "$ALERTMANAGER_PORT"; do
  i=0
  until answers "$port"; do
    i=$((i + 1))
    if [ "$i" -gt $((BOUND * 5)) ]; then echo "nothing answers on port $port after ${BOUND}s"; exit 1; fi
    sleep 0.2
  done
done
echo "applied"
