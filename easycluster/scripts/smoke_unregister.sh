# shellcheck shell=bash
# Remove the smoke test's throwaway USERS from DOMAIN, each whatever happened to the others.
# params: USERS DOMAIN
for user in "${USERS[@]}"; do ejabberdctl unregister "$user" "$DOMAIN" >/dev/null; done
