# shellcheck shell=bash
# Evaluate EXPR in a hidden Erlang node (NAME_FLAG: -name or -sname), as ejabberdctl does: the
# ejabberd user, its cookie file and the node's ERL_OPTIONS (the distribution's TLS). su's own
# options end at --: the arguments after the user go to the shell, whatever they look like.
# params: NAME_FLAG EXPR EJABBERD_DEFAULT
# shellcheck disable=SC2016  # expanded by the ejabberd user's shell: $ERL_OPTIONS split on purpose
su -s /bin/sh -c '. "$1"; exec erl "$2" "easycluster$$" -hidden -noinput $ERL_OPTIONS -eval "$3"' -- ejabberd \
  sh "$EJABBERD_DEFAULT" "$NAME_FLAG" "$EXPR"
