# shellcheck shell=bash
# rm -rf FILES...
# params: FILES
rm -rf -- "${FILES[@]}"
