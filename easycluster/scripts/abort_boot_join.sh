# shellcheck shell=bash
# A node waiting for its join's turn holds nothing yet: stopped through its unit, and the
# first-start files and the translation cache it built taken back.
# params: JOINING JOIN_SEED_FILE JOIN_GO TRANSLATIONS_CACHE
set -e
ec_retire
rm -f "$JOINING" "$JOIN_SEED_FILE" "$JOIN_GO" "$TRANSLATIONS_CACHE"
