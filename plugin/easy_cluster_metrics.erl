%%% easy_cluster_metrics: this node's metrics in Prometheus's text format, written every
%%% ?INTERVAL_MS into node-exporter's textfile directory (easycluster deploys node-exporter with
%%% --collector.textfile.directory=?DIR when the inventory has cluster.monitoring), and served
%%% from there on node-exporter's port, which the firewall opens to the monitoring host only.
%%%
%%% Why a file and not an HTTP listener of our own: node-exporter (Debian's, on 12 and 13) is
%%% what Prometheus users already run on every host; it serves the host's own metrics and the
%%% systemd units' (ejabberd's restarts) beside ours, and it keeps answering while ejabberd is
%%% down, when the file's age (easycluster_metrics_written_timestamp_seconds) tells the
%%% monitoring host that this node stopped. mod_prometheus needs ejabberd 24.07 and OTP 26.
%%%
%%% One process per node (supervised: a child of ejabberd_gen_mod_sup, like the partition
%%% watcher). Each metric is read on its own: one that cannot be read now is left out of the
%%% file, the others are written. `ejabberdctl easy_cluster_metrics` prints what would be written.
-module(easy_cluster_metrics).
-behaviour(gen_server).

-export([child_spec/0, start_link/0, text/0, command/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2, code_change/3]).
%% pure: the text format (checked by promtool in tests/test_monitoring_lab.py), the OS (asserted there), a
%% certificate's end (no lab test has a certificate with monitoring: run by hand against an EC cert)
-export([format/1, not_after/1, os_version/1]).

-include("logger.hrl").

-define(NAME, easy_cluster_metrics).
-define(DIR, "/var/lib/easycluster-metrics").           % paths.METRICS_DIR
-define(PROM, "easycluster.prom").
-define(INTERVAL_MS, 5000).
-define(BACKUP_DIR, "/var/backups/easycluster-mnesia").  % paths.MNESIA_BACKUP_DIR
-define(DIST_CERT, "/etc/ejabberd/dist-tls/node.pem").   % paths.DIST_TLS_CERT
-define(DETS_LIMIT, 2147483648).                         % dets' largest file: 2 GB

-type labels() :: [{atom(), iodata()}].
-type sample() :: {Name :: atom(), labels(), number()}.
-type family() :: {Name :: atom(), gauge | counter, Help :: string(), [sample()]}.
-export_type([family/0]).

%%%===================================================================
%%% Under its supervisor
%%%===================================================================
-spec child_spec() -> supervisor:child_spec().
child_spec() ->
    #{id => ?NAME, start => {?MODULE, start_link, []}, restart => permanent,
      shutdown => 5000, type => worker, modules => [?MODULE]}.

-spec start_link() -> {ok, pid()} | ignore | {error, term()}.
start_link() ->
    gen_server:start_link({local, ?NAME}, ?MODULE, [], []).

%% `ejabberdctl easy_cluster_metrics`: the text that is written, now.
-spec command() -> easy_cluster_json:answer().
command() ->
    easy_cluster_json:ok(#{text => iolist_to_binary(text())}).

-spec init([]) -> {ok, undefined}.
init([]) ->
    self() ! write,
    {ok, undefined}.

-spec handle_call(term(), gen_server:from(), undefined) -> {reply, {error, badarg}, undefined}.
handle_call(_Request, _From, State) ->
    {reply, {error, badarg}, State}.

-spec handle_cast(term(), undefined) -> {noreply, undefined}.
handle_cast(_Msg, State) ->
    {noreply, State}.

-spec handle_info(term(), undefined) -> {noreply, undefined}.
handle_info(write, State) ->
    erlang:send_after(?INTERVAL_MS, self(), write),
    case filelib:is_dir(?DIR) of
        true -> write(text());
        false -> ok        % no monitoring here: nothing reads it
    end,
    {noreply, State};
handle_info(_Info, State) ->
    {noreply, State}.

-spec terminate(term(), undefined) -> ok.
terminate(_Reason, _State) ->
    ok.

-spec code_change(term(), undefined, term()) -> {ok, undefined}.
code_change(_OldVsn, State, _Extra) ->
    {ok, State}.

%% Written whole, then renamed: node-exporter never reads half a file.
write(Text) ->
    Tmp = filename:join(?DIR, "." ?PROM ".tmp"),
    case file:write_file(Tmp, Text) of
        ok -> _ = file:rename(Tmp, filename:join(?DIR, ?PROM)), ok;
        {error, Why} -> ?WARNING_MSG("easy_cluster: metrics not written to ~ts: ~p", [?DIR, Why])
    end.

%%%===================================================================
%%% The metrics
%%%===================================================================
-spec text() -> iolist().
text() ->
    format(lists:append([safe(F) || F <- [fun cluster/0, fun tables/0, fun courier/0, fun service/0,
                                           fun database/0, fun versions/0, fun backup/0,
                                           fun certificates/0]])
           ++ [{easycluster_metrics_written_timestamp_seconds, gauge,
                "When this node last wrote these metrics (Unix seconds): an old value is a node that stopped",
                [{easycluster_metrics_written_timestamp_seconds, [], erlang:system_time(second)}]}]).

%% A group of metrics that cannot be read now (Mnesia stopping, a table gone) is left out.
-spec safe(fun(() -> [family()])) -> [family()].
safe(F) ->
    try F()
    catch C:R ->
            ?DEBUG("easy_cluster: metrics ~p: ~p:~p", [F, C, R]),
            []
    end.

-spec cluster() -> [family()].
cluster() ->
    DbNodes = mnesia:system_info(db_nodes),
    Running = mnesia:system_info(running_db_nodes),
    Partitioned = easy_cluster_partition:partitioned_with(),
    Missing = [T || T <- mnesia:system_info(tables), mnesia:table_info(T, storage_type) == unknown],
    Master = mnesia:table_info(schema, storage_type) == disc_copies,
    [{easycluster_db_nodes, gauge, "Members of the Mnesia cluster, as this node knows them",
      [{easycluster_db_nodes, [], length(DbNodes)}]},
     {easycluster_running_db_nodes, gauge, "Members this node sees running",
      [{easycluster_running_db_nodes, [], length(Running)}]},
     {easycluster_peer_running, gauge, "1 if this node sees the member running, 0 if not",
      [{easycluster_peer_running, [{peer, atom_to_list(N)}], bool(lists:member(N, Running))}
       || N <- DbNodes, N /= node()]},
     {easycluster_partitioned, gauge, "1 if Mnesia reported a partition with a member since the last heal",
      [{easycluster_partitioned, [], bool(Partitioned /= [])}]},
     {easycluster_partitioned_with, gauge, "The members Mnesia reported a partition with",
      [{easycluster_partitioned_with, [{peer, atom_to_list(N)}], 1} || N <- Partitioned]},
     {easycluster_master, gauge, "1 if this node is a master (its schema on disc), 0 for a satellite",
      [{easycluster_master, [], bool(Master)}]},
     {easycluster_missing_tables, gauge, "Tables of the cluster this node holds no copy of",
      [{easycluster_missing_tables, [], length(Missing)}]}].

-spec tables() -> [family()].
tables() ->
    Rows = [{T, mnesia:table_info(T, storage_type), mnesia:table_info(T, size), bytes(T)}
            || T <- mnesia:system_info(tables), mnesia:table_info(T, storage_type) /= unknown],
    Labels = fun(T, S) -> [{table, atom_to_list(T)}, {storage, atom_to_list(S)}] end,
    [{easycluster_table_records, gauge, "Records in this node's copy of the table",
      [{easycluster_table_records, Labels(T, S), N} || {T, S, N, _} <- Rows]},
     {easycluster_table_bytes, gauge, "Bytes of this node's copy: the dets file for disc_only_copies, memory otherwise",
      [{easycluster_table_bytes, Labels(T, S), B} || {T, S, _, B} <- Rows]},
     {easycluster_dets_limit_bytes, gauge, "The largest dets file (disc_only_copies): 2 GB",
      [{easycluster_dets_limit_bytes, [], ?DETS_LIMIT}]}].

%% disc_only_copies: mnesia reports the dets file's size in bytes; ets tables: words.
bytes(T) ->
    case mnesia:table_info(T, storage_type) of
        disc_only_copies -> mnesia:table_info(T, memory);
        _ -> mnesia:table_info(T, memory) * erlang:system_info(wordsize)
    end.

-spec courier() -> [family()].
courier() ->
    #{unconfirmed := Unconfirmed, rerouted := Rerouted} = ejabberd_cluster_easy:stats(),
    [{easycluster_courier_unconfirmed, gauge, "Messages sent to sessions on other nodes, not yet confirmed",
      [{easycluster_courier_unconfirmed, [], Unconfirmed}]},
     {easycluster_courier_rerouted_total, counter,
      "Messages routed again since the courier started (their node went down before confirming)",
      [{easycluster_courier_rerouted_total, [], Rerouted}]}].

-spec service() -> [family()].
service() ->
    Sessions = length(ejabberd_sm:dirty_get_my_sessions_list()),
    Offline = case lists:member(offline_msg, mnesia:system_info(tables))
                  andalso mnesia:table_info(offline_msg, storage_type) /= unknown of
                  true -> [{easycluster_offline_messages, gauge, "Messages in offline storage (Mnesia: the whole cluster's)",
                            [{easycluster_offline_messages, [], mnesia:table_info(offline_msg, size)}]}];
                  false -> []
              end,
    [{easycluster_sessions, gauge, "Client sessions on this node",
      [{easycluster_sessions, [], Sessions}]} | Offline].

%% With the data in SQL: whether this node reaches the database now (one query per vhost).
-spec database() -> [family()].
database() ->
    case [H || H <- ejabberd_option:hosts(), ejabberd_option:default_db(H) == sql] of
        [] -> [];
        Hosts ->
            Up = [{easycluster_database_up, [{vhost, binary_to_list(H)}], bool(sql_up(H))} || H <- Hosts],
            [{easycluster_database_up, gauge, "1 if this node's query to the database answered",
              Up}]
    end.

sql_up(Host) ->
    try ejabberd_sql:sql_query(Host, [<<"SELECT 1;">>]) of
        {selected, _, _} -> true;
        _ -> false
    catch _:_ -> false
    end.

-spec versions() -> [family()].
versions() ->
    #{ejabberd_version := Ejabberd, plugin_version := Plugin} = easy_cluster_status:versions(),
    Info = [{ejabberd_version, str(Ejabberd)},     % (the node: the scrape target's own label)
            {otp_release, erlang:system_info(otp_release)},
            {plugin_version, str(Plugin)},
            {os, os_version()}],
    [{easycluster_node_info, gauge, "Versions this node runs (the value is 1)",
      [{easycluster_node_info, Info, 1}]}].

str(null) -> "";
str(B) when is_binary(B) -> binary_to_list(B).

%% "Debian 13", from os-release (NAME without "GNU/Linux", VERSION_ID).
os_version() ->
    os_version("/etc/os-release").

-spec os_version(file:filename()) -> string().
os_version(File) ->
    case file:read_file(File) of
        {ok, Text} ->
            Fields = [list_to_tuple(string:split(L, "=")) || L <- string:lexemes(binary_to_list(Text), "\n"),
                                                             string:find(L, "=") /= nomatch],
            Get = fun(K) -> string:trim(proplists:get_value(K, Fields, ""), both, "\"") end,
            lists:flatten(string:replace(Get("NAME"), " GNU/Linux", "")) ++ " " ++ Get("VERSION_ID");
        _ -> "unknown"
    end.

-spec backup() -> [family()].
backup() ->
    Stamps = [filelib:last_modified(F) || F <- filelib:wildcard(filename:join(?BACKUP_DIR, "*.backup"))],
    case [unix(calendar:local_time_to_universal_time_dst(S)) || S <- Stamps, S /= 0] of
        [] -> [];
        Times ->
            [{easycluster_backup_newest_timestamp_seconds, gauge,
              "When the newest Mnesia backup on this host was written (Unix seconds)",
              [{easycluster_backup_newest_timestamp_seconds, [], lists:max(Times)}]}]
    end.

unix([]) -> 0;
unix([UTC | _]) -> calendar:datetime_to_gregorian_seconds(UTC) - 62167219200.

%% The client certificates (ejabberd's certfiles) and the distribution's.
-spec certificates() -> [family()].
certificates() ->
    Configured = case ejabberd_option:certfiles() of undefined -> []; L -> L end,
    Files = lists:usort([binary_to_list(iolist_to_binary(F)) || F <- Configured]
                        ++ [?DIST_CERT || filelib:is_regular(?DIST_CERT)]),
    Samples = [{easycluster_certificate_expiry_timestamp_seconds,
                [{file, F}, {use, case F of ?DIST_CERT -> "distribution"; _ -> "c2s" end}], End}
               || F <- Files, End <- [not_after(F)], is_integer(End)],
    [{easycluster_certificate_expiry_timestamp_seconds, gauge,
      "When the first certificate of the file ends (Unix seconds)", Samples}].

%% The end of the first certificate in a PEM file, in Unix seconds; undefined if unreadable.
-spec not_after(file:filename()) -> integer() | undefined.
not_after(File) ->
    try
        {ok, Pem} = file:read_file(File),
        [Der | _] = [D || {'Certificate', D, not_encrypted} <- public_key:pem_decode(Pem)],
        Cert = public_key:pkix_decode_cert(Der, plain),
        {'Certificate', Tbs, _, _} = Cert,
        {'Validity', _NotBefore, NotAfter} = element(6, Tbs),
        pubkey_cert:time_str_2_gregorian_sec(NotAfter) - 62167219200
    catch _:_ -> undefined
    end.

bool(true) -> 1;
bool(false) -> 0.

%%%===================================================================
%%% The text format (https://prometheus.io/docs/instrumenting/exposition_formats/)
%%%===================================================================
-spec format([family()]) -> iolist().
format(Families) ->
    [[["# HELP ", atom_to_list(Name), " ", Help, "\n# TYPE ", atom_to_list(Name), " ", atom_to_list(Type), "\n",
       [[atom_to_list(N), labels(L), " ", number(V), "\n"] || {N, L, V} <- Samples]]
      || {Name, Type, Help, Samples} <- Families, Samples /= []]].

labels([]) -> "";
labels(L) ->
    ["{", lists:join(",", [[atom_to_list(K), "=\"", escape(V), "\""] || {K, V} <- L]), "}"].

escape(V) ->
    lists:flatmap(fun($\\) -> "\\\\"; ($") -> "\\\""; ($\n) -> "\\n"; (C) -> [C] end,
                  unicode:characters_to_list(V)).

number(V) when is_integer(V) -> integer_to_list(V);
number(V) when is_float(V) -> float_to_list(V, [short]).
