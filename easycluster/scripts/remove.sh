# shellcheck shell=bash
# Remove FILES (rm -f; RECURSIVE 1: rm -rf, directories too).
# params: FILES RECURSIVE
if [ "$RECURSIVE" = 1 ]; then rm -rf -- "${FILES[@]}"; else rm -f -- "${FILES[@]}"; fi
