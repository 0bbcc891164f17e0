# shellcheck shell=bash
# Register the smoke test's throwaway USERS on DOMAIN, with the password uploaded (SFTP) to
# PASSWORD_FILE, which goes at once.
# params: USERS DOMAIN PASSWORD_FILE
set -e
password=$(cat "$PASSWORD_FILE")
rm -f "$PASSWORD_FILE"
for user in "${USERS[@]}"; do ejabberdctl register "$user" "$DOMAIN" "$password" >/dev/null; done
