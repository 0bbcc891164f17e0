# shellcheck shell=bash
# Which boot this is (ec_boot_id).
ec_boot_id
