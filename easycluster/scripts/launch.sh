# shellcheck shell=bash
# Start the node and return at once (a unit already starting is left to go on).
set -e
case "$(systemctl show ejabberd -p ActiveState --value)" in active|activating) exit 0 ;; esac
ec_launch
