"""What easycluster does on one host, each action one batched remote script.

Service control works with systemd (`systemctl`) and without it (the SysV way,
creating /run/ejabberd as systemd-tmpfiles would). `ejabberdctl start` exits 0
even when the node dies at once, so every start is followed by polling, and a
failure carries the tail of error.log.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

from .remote import Host, RemoteError, q
from .render import PLUGIN_DIR, ManagedFile, plugin_source

START_BOUND = 90      # seconds for a node to report started
STOP_BOUND = 60
BACKUP_DIR = "/var/backups/easycluster"

_SERVICE = r"""
export LC_ALL=C PATH=/usr/sbin:/usr/bin:/sbin:/bin
cd /   # the ejabberd user must be able to read the working directory (erl_prim_loader)
ec_log_tail() {
  echo "--- tail of /var/log/ejabberd/error.log:"
  tail -n 15 /var/log/ejabberd/error.log 2>/dev/null || echo "(no error.log)"
}
ec_start() {
  if [ -d /run/systemd/system ]; then
    systemctl start ejabberd || { ec_log_tail; return 1; }
  else
    install -d -o ejabberd -g ejabberd -m 755 /run/ejabberd
    su ejabberd -s /bin/sh -c 'ejabberdctl start' || { ec_log_tail; return 1; }
  fi
  ec_wait_started
}
ec_wait_started() {
  # Each `ejabberdctl status` boots a hidden Erlang VM (~0.2 s of CPU): polling it
  # would slow the very start it waits for. Wait cheaply for the client port
  # (listeners open last), then confirm once with ejabberdctl.
  end=$(( $(date +%s) + START_BOUND )); gone=0
  while [ "$(date +%s)" -lt "$end" ]; do
    if (exec 3<>/dev/tcp/127.0.0.1/C2S_PORT) 2>/dev/null && ejabberdctl status >/dev/null 2>&1; then
      return 0
    fi
    if pgrep -u ejabberd -f beam >/dev/null; then gone=0; else gone=$((gone + 1)); fi
    if [ "$gone" -ge 20 ]; then echo "the node died while starting"; ec_log_tail; return 1; fi
    sleep 0.1
  done
  echo "the node did not report started within START_BOUND s"; ec_log_tail; return 1
}
ec_stop() {
  if [ -d /run/systemd/system ]; then systemctl stop ejabberd; else
    ejabberdctl stop >/dev/null 2>&1
    end=$(( $(date +%s) + STOP_BOUND ))
    while pgrep -u ejabberd -f beam >/dev/null; do
      [ "$(date +%s)" -lt "$end" ] || { echo "the node did not stop within STOP_BOUND s"; return 1; }
      sleep 0.2
    done
  fi
}
""".replace("START_BOUND", str(START_BOUND)).replace("STOP_BOUND", str(STOP_BOUND))


def _script(body: str, c2s_port: int = 5222) -> str:
    return _SERVICE.replace("C2S_PORT", str(c2s_port)) + "set -e\n" + body


def install(host: Host, version: str) -> None:
    """apt-get install the pinned ejabberd without starting it (policy-rc.d), as on any Debian."""
    host.script(_script(f"""
export DEBIAN_FRONTEND=noninteractive
own_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; own_policy=1
fi
trap '[ $own_policy = 1 ] && rm -f /usr/sbin/policy-rc.d' EXIT
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends ejabberd={q(version)} erlang-dev >/dev/null
dpkg-query -W -f='${{Version}}' ejabberd
"""), what=f"installing ejabberd {version}", timeout=900)


def configure(host: Host, files: list[ManagedFile], plugin: bool) -> list[str]:
    """Upload changed files (and the plugin source) by SFTP, then install them in one
    script: timestamped backup of each replaced file, then owner/mode, then compile."""
    staging = host.run("mktemp -d /root/.easycluster-XXXXXX", what="making a staging directory").stdout.strip()
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    body = [f"trap 'rm -rf {q(staging)}' EXIT", f"install -d -m 700 {BACKUP_DIR}"]
    backups = []
    try:
        for i, mf in enumerate(files):
            host.put_bytes(mf.data(), f"{staging}/{i}")
            backup = f"{BACKUP_DIR}/{mf.path.strip('/').replace('/', '_')}.{stamp}"
            body.append(f"if [ -f {q(mf.path)} ]; then cp -p {q(mf.path)} {q(backup)}; chmod go= {q(backup)}; "
                        f"echo backup={backup}; fi")
            body.append(f"install -D -m {mf.mode:o} -o {mf.owner} -g {mf.group} {staging}/{i} {q(mf.path)}")
        if plugin:
            host.put_bytes(plugin_source().encode(), f"{staging}/easy_cluster.erl")
            body.append(f"""
install -d -m 755 {PLUGIN_DIR}/src {PLUGIN_DIR}/ebin
include=$(dpkg -L ejabberd | grep -m1 '/ejabberd-[^/]*/include$')
rm -rf {staging}/ebin && mkdir {staging}/ebin
erlc -I "$include" -o {staging}/ebin {staging}/easy_cluster.erl
install -m 644 {staging}/ebin/easy_cluster.beam {PLUGIN_DIR}/ebin/easy_cluster.beam
install -m 644 {staging}/easy_cluster.erl {PLUGIN_DIR}/src/easy_cluster.erl""")
        result = host.script(_script("\n".join(body)), what="writing configuration")
    except RemoteError:
        host.run(f"rm -rf {q(staging)}", check=False)
        raise
    backups = [line[7:] for line in result.stdout.splitlines() if line.startswith("backup=")]
    return backups


def start(host: Host, c2s_port: int) -> None:
    host.script(_script("ec_start", c2s_port), what="starting ejabberd", timeout=START_BOUND + 30)


def stop(host: Host) -> None:
    host.script(_script("ec_stop"), what="stopping ejabberd", timeout=STOP_BOUND + 30)


def restart(host: Host, c2s_port: int) -> None:
    host.script(_script("ec_stop\nec_start", c2s_port), what="restarting ejabberd",
             timeout=START_BOUND + STOP_BOUND + 30)


def reload_config(host: Host) -> None:
    host.run("ejabberdctl reload_config", what="reloading ejabberd.yml")


def status(host: Host) -> dict | None:
    """The node's easy_cluster_status, or None if it does not answer."""
    r = host.run("ejabberdctl easy_cluster_status", check=False, what="reading cluster status")
    if not r.ok:
        return None
    try:
        return json.loads(r.stdout)
    except json.JSONDecodeError:
        raise RemoteError(host.name, "easy_cluster_status answered no JSON", r.stdout.strip()[:200]) from None


def join_as_master(host: Host, seed: str) -> dict:
    """Join through the plugin; raise with the failed step and reason on failure."""
    r = host.run(f"ejabberdctl --no-timeout join_as_master {q(seed)}", check=False,
                 what=f"joining {seed}", timeout=1800)
    try:
        answer = json.loads(r.stdout.strip().splitlines()[-1]) if r.stdout.strip() else {}
    except json.JSONDecodeError:
        answer = {}
    if r.ok and answer.get("ok"):
        return answer
    if answer:
        detail = f"step {answer.get('failed_step')!r} failed: {answer.get('reason')}"
        if answer.get("rolled_back") is not None:
            detail += f" (rolled back: {'yes' if answer.get('rolled_back') else 'NO'})"
    else:
        detail = (r.stderr.strip() or r.stdout.strip() or f"exit {r.rc}")[-300:]
    raise RemoteError(host.name, f"join_as_master {seed} failed", detail)


def wait_status(host: Host, ready, bound: float = 120, interval: float = 0.3) -> dict:
    """Poll easy_cluster_status until ready(status) holds; return the last status."""
    deadline = time.monotonic() + bound
    last = None
    while True:
        last = status(host)
        if last is not None and ready(last):
            return last
        if time.monotonic() > deadline:
            raise RemoteError(host.name, f"not ready within {bound:.0f}s",
                              json.dumps({k: last.get(k) for k in ("running_db_nodes", "missing_tables")})
                              if last else "the node does not answer")
        time.sleep(interval)
