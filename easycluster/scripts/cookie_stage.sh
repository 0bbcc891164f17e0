# shellcheck shell=bash
# The new cookie, uploaded (SFTP) to COOKIE_STAGING, made readable to the plugin only.
# params: COOKIE_STAGING
chown ejabberd:ejabberd "$COOKIE_STAGING" && chmod 400 "$COOKIE_STAGING"
