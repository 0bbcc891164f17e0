# shellcheck shell=bash
# A staging directory for configure's uploads (SFTP); prints its path.
# params: STAGING_TEMPLATE
d=$(mktemp -d "$STAGING_TEMPLATE") && mkdir "$d/src" && echo "$d"
