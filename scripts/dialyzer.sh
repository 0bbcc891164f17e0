#!/bin/bash
# dialyzer over the plugin (plugin/*.erl), against the Erlang/OTP and ejabberd the lab hosts run:
#   sudo scripts/dialyzer.sh [RELEASE]
# RELEASE: the lab hosts' Debian release, trixie (13: ejabberd 24.12 on OTP 27, the default, or
# $EASYCLUSTER_LAB_RELEASE) or bookworm (12: ejabberd 23.01 on OTP 25); with SUITE=backports, the
# release's backports (trixie: 26.07; bookworm: 24.12).
#
# Erlang need not be installed on this machine: the analysis runs in a chroot of a copy of the
# lab's base root filesystem (the one every lab host starts from, built once by the lab), into
# which erlang-dialyzer and ejabberd are installed from the lab's own apt repository (the very
# packages a lab host of that release installs). The lab's rootfs and repository
# are only read. Needs root (chroot); run after `make setup` (the lab's cache is built here if
# no lab was ever brought up).
#
# First the plugin is compiled as the hosts compile it (same include paths), plus
# +warn_missing_spec +warnings_as_errors: an exported function without a -spec fails the run.
# Then dialyzer, with WARNINGS below on top of its defaults, on the sources.
#
# Cached in $EASYCLUSTER_CACHE (default /var/cache/easycluster)/dialyzer-<suite>:
#   root/                          the copy, rebuilt when the lab's rootfs or apt repository change
#   root/var/cache/plt/otp.plt     erts kernel stdlib mnesia crypto (built once, the slow part)
#   root/var/cache/plt/deps-*.plt  otp.plt + the modules outside those the plugin needs (see
#                                  deps.escript below), rebuilt when that list changes
# Measured (2 cores, busy with a lab): a first run 92 s (copy and install 16 s, OTP PLT 53 s,
# deps PLT 18 s, analysis 3 s); later runs 4-5 s.
# Exit status: 0 when dialyzer has nothing to say, 2 when it warns, 1 on trouble.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${EASYCLUSTER_CACHE:-/var/cache/easycluster}
release=${1:-${EASYCLUSTER_LAB_RELEASE:-trixie}}
case $release in trixie|bookworm) ;; *) echo "dialyzer.sh: no lab release $release: trixie or bookworm" >&2; exit 1 ;; esac
suite=$release${SUITE:+-$SUITE}
work=$cache/dialyzer-$suite
root=$work/root
ENV_VERSION=1                            # bump when what goes into the copy changes
# Warnings on top of dialyzer's defaults.
WARNINGS=(-Wunmatched_returns -Werror_handling -Wunknown -Wextra_return)
# The OTP applications of the base PLT (everything else the plugin calls goes to deps-*.plt).
OTP_APPS=(erts kernel stdlib mnesia crypto)

say() { echo "dialyzer.sh: $*" >&2; }
die() { say "$*"; exit 1; }
now() { date +%s%N; }
took() { echo "$(( ($(now) - $1) / 1000000 )) ms"; }

[ "$(id -u)" -eq 0 ] || die "needs root (it runs dialyzer in a chroot): sudo $0"

# The lab's base rootfs and apt repository of the release (its suite), as the lab finds them (and builds them, the first
# time: debootstrap, then the download of ejabberd's packages, a few minutes). Without the
# toolkit's virtualenv, where the lab leaves them.
python=$repo/.venv/bin/python
if [ -x "$python" ]; then
    paths=$(RELEASE=$release SUITE=$suite "$python" - <<'EOF'
from easycluster_lab.lab import apt_repository, base_rootfs
import os, sys
log = lambda msg: print(f"dialyzer.sh: the lab: {msg}", file=sys.stderr)
rootfs = base_rootfs(os.environ["RELEASE"], log)
print(rootfs)
print(apt_repository(rootfs, os.environ["RELEASE"], log) / os.environ["SUITE"])
EOF
) || die "the lab's cache could not be found or built (above)"
    base=$(sed -n 1p <<<"$paths"); aptrepo=$(sed -n 2p <<<"$paths")
else
    base=$cache/rootfs-$release-systemd; aptrepo=$cache/apt-repo-$release-systemd/$suite
fi
if ! [ -f "$base.recipe" ] || ! [ -f "$aptrepo/Packages" ]; then
    die "no lab rootfs ($base) or apt repository ($aptrepo): run \`make setup\` and bring a lab up once"
fi

mkdir -p "$work"
exec 9>"$work/.lock"
flock 9                                   # one run at a time (the copy and the PLTs are shared)

# The copy of the rootfs with erlang-dialyzer and ejabberd installed.
recipe="env-$ENV_VERSION $(cat "$base.recipe") $(sha256sum < "$aptrepo/Packages" | cut -c1-64)"
if ! [ -f "$work/root.recipe" ] || [ "$(cat "$work/root.recipe")" != "$recipe" ]; then
    t0=$(now)
    say "preparing $root: a copy of the lab's rootfs with erlang-dialyzer and ejabberd"
    rm -rf "$root" "$root.tmp" "$work/root.recipe"
    cp -a --reflink=auto "$base" "$root.tmp"
    cp -a "$aptrepo" "$root.tmp/srv/lab-repo"
    echo "deb [trusted=yes] file:/srv/lab-repo ./" > "$root.tmp/etc/apt/sources.list.d/lab.list"
    printf '#!/bin/sh\nexit 101\n' > "$root.tmp/usr/sbin/policy-rc.d"   # start no service
    chmod 755 "$root.tmp/usr/sbin/policy-rc.d"
    if ! chroot "$root.tmp" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
            /bin/sh -c 'apt-get -q update && apt-get -q -y install erlang-dialyzer erlang-dev ejabberd' \
            > "$work/install.log" 2>&1; then
        tail -n 20 "$work/install.log" >&2
        die "installing into the copy failed (whole log: $work/install.log)"
    fi
    rm -rf "$root.tmp/srv/lab-repo" "$root.tmp/etc/apt/sources.list.d/lab.list" "$root.tmp/var/lib/apt/lists/"*_*
    mkdir -p "$root.tmp/var/cache/plt"
    mv "$root.tmp" "$root"
    echo "$recipe" > "$work/root.recipe"
    say "copy ready in $(took "$t0")"
fi

# The plugin's sources, fresh each run.
rm -rf "$root/tmp/plugin" && mkdir -p "$root/tmp/plugin/src" "$root/tmp/plugin/ebin"
cp "$repo"/plugin/*.erl "$root/tmp/plugin/src/"

# Which modules outside OTP_APPS go into the PLT, as the paths of their beams: those the plugin
# calls, those whose behaviour it implements, and the modules whose types the specs of all these
# (and the plugin's own, and the headers it includes) name, and so on.
cat > "$root/tmp/plugin/deps.escript" <<'EOF'
#!/usr/bin/env escript
main([Ebin, EjabberdEbin, OtpApps]) ->
    true = code:add_path(EjabberdEbin),
    Otp = [list_to_atom(A) || A <- string:lexemes(OtpApps, " ")],
    Beams = filelib:wildcard(filename:join(Ebin, "*.beam")),
    Own = [list_to_atom(filename:basename(B, ".beam")) || B <- Beams],
    Needed = lists:append([called(B) ++ remote_types(B) || B <- Beams]),
    closure(lists:usort(Needed) -- Own, Own, Otp).

closure([], _Seen, _Otp) -> ok;
closure([M | Rest], Seen, Otp) ->
    case lists:member(M, Seen) of
        true -> closure(Rest, Seen, Otp);
        false ->
            case code:which(M) of
                Path when is_list(Path) ->
                    App = list_to_atom(hd(string:lexemes(filename:basename(filename:dirname(filename:dirname(Path))), "-"))),
                    case lists:member(App, Otp) of
                        true -> closure(Rest, [M | Seen], Otp);
                        false ->
                            io:format("~s~n", [Path]),
                            closure(Rest ++ remote_types(Path), [M | Seen], Otp)
                    end;
                preloaded -> closure(Rest, [M | Seen], Otp);          % erts
                _ ->
                    io:format(standard_error, "dialyzer.sh: no beam for ~p~n", [M]),
                    closure(Rest, [M | Seen], Otp)
            end
    end.

called(Beam) ->
    {ok, {_, [{imports, Is}, {attributes, As}]}} = beam_lib:chunks(Beam, [imports, attributes]),
    [M || {M, _, _} <- Is] ++ lists:append([Bs || {K, Bs} <- As, K == behaviour orelse K == behavior]).

remote_types(Beam) ->
    case beam_lib:chunks(Beam, [abstract_code]) of
        {ok, {_, [{abstract_code, {raw_abstract_v1, Forms}}]}} ->
            lists:usort(collect([F || {attribute, _, K, _} = F <- Forms,
                                      lists:member(K, [spec, callback, type, opaque, record])]));
        _ -> []
    end.

collect({remote_type, _, [{atom, _, M}, {atom, _, _}, Args]}) -> [M | collect(Args)];
collect(T) when is_tuple(T) -> collect(tuple_to_list(T));
collect(L) when is_list(L) -> lists:append([collect(X) || X <- L]);
collect(_) -> [].
EOF

# What runs in the chroot (a file, not stdin: erl would read the rest of the script).
cat > "$root/tmp/plugin/run.sh" <<'EOF'
set -euo pipefail
now() { date +%s%N; }
took() { echo "$(( ($(now) - $1) / 1000000 ))"; }
say() { echo "dialyzer.sh: $*" >&2; }
plts=/var/cache/plt
cd /tmp/plugin
# The include paths and code path the hosts compile the plugin with (the toolkit's plugin build).
# (awk reads all: grep -m1 would leave dpkg to a SIGPIPE, a failure under pipefail)
include=$(dpkg -L ejabberd | awk '/\/ejabberd-[^\/]*\/include$/ && !n++')
xmpp_include=$(dpkg -L erlang-p1-xmpp | awk '/\/include\/xmpp\.hrl$/ && !n++'); xmpp_include=${xmpp_include%/xmpp.hrl}
if ! [ -d "$include" ] || ! [ -d "$xmpp_include" ]; then say "no ejabberd or xmpp include directory"; exit 1; fi
t=$(now)
erlc +debug_info +warn_missing_spec +warnings_as_errors -I "$include" -I "$xmpp_include" -pa "${include%/include}/ebin" -o ebin src/*.erl
say "compiled the plugin in $(took "$t") ms"

# 1. OTP (once).
if ! [ -f $plts/otp.plt ]; then
    t=$(now)
    say "building the OTP PLT ($OTP_APPS): once, a few minutes"
    # exit 2: warnings (OTP 27 names the calls into applications outside OTP_APPS, compile and
    # yecc, as unknown): the PLT is built all the same. 1: it is not.
    rc=0; dialyzer --build_plt --output_plt $plts/otp.plt.tmp --apps $OTP_APPS >$plts/otp.log 2>&1 || rc=$?
    if [ $rc != 0 ] && [ $rc != 2 ]; then tail -n 20 $plts/otp.log >&2; exit 1; fi
    mv $plts/otp.plt.tmp $plts/otp.plt
    say "OTP PLT built in $(took "$t") ms"
fi

# 2. The modules outside OTP_APPS the plugin needs in the PLT (deps.escript says which).
deps=$(escript deps.escript ebin "${include%/include}/ebin" "$OTP_APPS")
key=$(echo "$deps" | sha256sum | cut -c1-16)
deps_plt=$plts/deps-$key.plt
if ! [ -f "$deps_plt" ]; then
    t=$(now)
    say "adding $(echo "$deps" | wc -l) modules to the PLT: $(echo "$deps" | xargs -n1 basename | sed 's/\.beam$//' | tr '\n' ' ')"
    rm -f $plts/deps-*.plt
    rc=0; dialyzer --add_to_plt --plt $plts/otp.plt --output_plt "$deps_plt.tmp" $deps >$plts/deps.log 2>&1 || rc=$?
    if [ $rc != 0 ] && [ $rc != 2 ]; then tail -n 20 $plts/deps.log >&2; exit 1; fi
    mv "$deps_plt.tmp" "$deps_plt"
    say "deps PLT built in $(took "$t") ms"
fi

# 3. The plugin.
t=$(now)
rc=0
dialyzer --plt "$deps_plt" $WARNINGS -I "$include" -I "$xmpp_include" --src src/*.erl || rc=$?
say "analysis took $(took "$t") ms (dialyzer exit $rc)"
exit $rc
EOF
chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    OTP_APPS="${OTP_APPS[*]}" WARNINGS="${WARNINGS[*]}" /bin/bash /tmp/plugin/run.sh </dev/null
