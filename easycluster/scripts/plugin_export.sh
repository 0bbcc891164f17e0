# shellcheck shell=bash
# The plugin as this host has it installed, for a host with the same packages to install
# instead of compiling its own (configure.sh's SHARED_BUILT_WITH; erlc costs ~1 s there): what
# its beams were built with, and the beams, a tar in base64.
# params: PLUGIN_EBIN
set -e
[ -f "$PLUGIN_EBIN/easy_cluster.beam" ]
echo "built_with=$(ec_plugin_built_with)"
echo "beam=$(tar -C "$PLUGIN_EBIN" -cf - . | base64 -w0)"
