# shellcheck shell=bash
# A planned switchover of the replicated database (fab remove-database-host, before the primary
# leaves), asked of Patroni on the candidate: the primary LEADER hands over to CANDIDATE, a
# synchronous standby (it holds every acknowledged write). Patroni waits for the candidate.
# params: LEADER CANDIDATE PATRONI_CONFIG
set -e
timeout 120 patronictl -c "$PATRONI_CONFIG" switchover --leader "$LEADER" --candidate "$CANDIDATE" --force
