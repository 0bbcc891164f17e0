# shellcheck shell=bash
# Remove the smoke test's throwaway USERS from DOMAIN, each whatever happened to the others, and
# their password's file PASSWORD_FILE if the registration left it behind.
# params: USERS DOMAIN PASSWORD_FILE
rm -f "$PASSWORD_FILE"
for user in "${USERS[@]}"; do ec_ctl unregister "$user" "$DOMAIN" >/dev/null; done
