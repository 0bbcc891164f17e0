%%% easy_cluster: easycluster's ejabberd module (`easy_cluster: {}` in ejabberd.yml): cluster
%%% status, multi-master joins, backups, heal and drain, as ejabberdctl commands, and the hooks
%%% and processes that keep messages from being lost while nodes come, go and get cut off.
%%%
%%% Every command answers one line of JSON so that the toolkit (and monitoring) can read it:
%%%   ejabberdctl easy_cluster_status            -> this node's view of the cluster
%%%   ejabberdctl easy_cluster_forget N          -> remove a stopped node N from the schema
%%%   ... (commands/0 below lists them all)
%%%
%%% This module is the gen_mod and the plugin's API: what the toolkit, ejabberdctl and the other
%%% nodes call by name (easy_cluster:F, in every version of the plugin). The work is done by
%%% the plugin's other modules, one per concern:
%%%   easy_cluster_status     easy_cluster_status / _statuses
%%%   easy_cluster_join       the boot-time join (`-s easy_cluster boot_join`)
%%%   easy_cluster_upgrade    a full-stop upgrade's hold at boot (`-s easy_cluster boot_hold`)
%%%   easy_cluster_satellite  a satellite's start: waits for a running master (`boot_satellite`)
%%%   easy_cluster_schema     forget a node, master nodes, force_load after a full outage;
%%%                           table records for an upgrade's plan
%%%   easy_cluster_backup     easy_cluster_backup / _restore
%%%   easy_cluster_partition  the partition watcher (a supervised gen_server)
%%%   easy_cluster_offline    the heal's carry-over of offline messages
%%%   easy_cluster_drain      a node's sessions out of routing before a stop
%%%   easy_cluster_delivery   hooks closing races around sessions that start
%%%   easy_cluster_cookie     cookie rotation at runtime
%%%   easy_cluster_sql        migrate-to-sql: the export into the database, and what came after
%%%   easy_cluster_metrics    the node's metrics in Prometheus's text format (cluster.monitoring)
%%%   easy_cluster_stop       the node's stop on SIGTERM (the unit's ExecStop): no code unloading
%%%   easy_cluster_json       the commands' JSON answers
%%% and, configured on their own in ejabberd.yml: ejabberd_cluster_easy (`cluster_backend: easy`,
%%% whose courier this module starts) and mod_offline_easy (`mod_offline: db_type: easy`).
%%%
%%% Processes, one per node, children of ejabberd's ejabberd_gen_mod_sup (under ejabberd_sup),
%%% started by start/2 and restarted by that supervisor if they die:
%%%   easy_cluster_partitions  the partition watcher (stopped by stop/1 on the last host)
%%%   easy_cluster_courier     the courier of cross-node messages (kept while the node runs:
%%%                            the cluster backend sends through it)
%%%   easy_cluster_metrics     writes the node's metrics for node-exporter every 5 s (stopped
%%%                            by stop/1 on the last host)
-module(easy_cluster).
-behaviour(gen_mod).

-export([start/2, stop/1, reload/3, depends/2, mod_options/1, mod_doc/0]).
-export([status/0, statuses/0, status_map/0, forget/1, set_master/1, backup/1, restore/1, drain/1]).
%% Called over RPC from a hidden node while ejabberd itself still waits for its tables.
-export([force_load/0]).
-export([partition_clear/0, partition_forget/1]).
-export([cookie/1]).
-export([tables/0, records/1]).
-export([sql_export/1, sql_delta/2, code_path/0]).
%% Run by init (-s) during a node's first start, before ejabberd.
-export([boot_join/0, boot_hold/0, boot_satellite/0]).
%% Heal: offline messages stored on the losing side carried over to the winner's data.
-export([offline_export/1, offline_import/1]).

-include("ejabberd_commands.hrl").
-include("logger.hrl").

-define(SUP, ejabberd_gen_mod_sup).

%%%===================================================================
%%% gen_mod
%%%===================================================================
-spec start(binary(), gen_mod:opts()) -> ok.
start(Host, _Opts) ->
    %% the partition watcher, one per node; already running (another host, or the module
    %% started again): Mnesia may have restarted since (a join), subscribe again
    case start_child(easy_cluster_partition:child_spec()) of
        {error, Why} -> ?ERROR_MSG("easy_cluster: the partition watcher did not start: ~p", [Why]);
        started -> ok;
        already_started -> easy_cluster_partition:resubscribe()
    end,
    %% the courier of cross-node messages (ejabberd_cluster_easy), one per node
    case start_child(ejabberd_cluster_easy:child_spec()) of
        {error, Why2} -> ?ERROR_MSG("easy_cluster: the courier did not start: ~p", [Why2]);
        _ -> ok
    end,
    %% the metrics' writer, one per node
    case start_child(easy_cluster_metrics:child_spec()) of
        {error, Why3} -> ?ERROR_MSG("easy_cluster: the metrics' writer did not start: ~p", [Why3]);
        _ -> ok
    end,
    %% SIGTERM: ejabberd's and Mnesia's stops, then halt (OTP's handler also unloads all code)
    case easy_cluster_stop:install() of
        ok -> ok;
        {error, Why4} -> ?ERROR_MSG("easy_cluster: the SIGTERM handler was not installed: ~p", [Why4])
    end,
    lists:foreach(fun({Hook, Mod, Fun, Seq}) -> ejabberd_hooks:add(Hook, Host, Mod, Fun, Seq) end,
                  hooks()),
    ejabberd_commands:register_commands(?MODULE, commands()).

-spec stop(binary()) -> ok.
stop(Host) ->
    lists:foreach(fun({Hook, Mod, Fun, Seq}) -> ejabberd_hooks:delete(Hook, Host, Mod, Fun, Seq) end,
                  hooks()),
    case gen_mod:is_loaded_elsewhere(Host, ?MODULE) of
        true -> ok;
        false ->
            %% (registered with this module as their definer: deleted as such)
            ejabberd_commands:unregister_commands(
              [C#ejabberd_commands{definer = ?MODULE} || C <- commands()]),
            stop_child(easy_cluster_partition:child_spec()),
            stop_child(easy_cluster_metrics:child_spec()),
            _ = easy_cluster_stop:uninstall(),
            ok
    end.

%% mod_offline stores at 50 (offline_message_hook) and delivers at 50 (c2s_self_presence).
hooks() ->
    [{c2s_self_presence, easy_cluster_delivery, publish_presence, 10},
     {offline_message_hook, easy_cluster_delivery, offline_recheck, 100},
     {c2s_handle_info, easy_cluster_delivery, c2s_handle_info, 10}].

%% A per-node child of ejabberd_gen_mod_sup (one for all hosts, unlike gen_mod:start_child/3's).
start_child(#{id := Id} = Spec) ->
    case supervisor:start_child(?SUP, Spec) of
        {ok, _} -> started;
        {error, {already_started, _}} -> already_started;
        {error, already_present} ->      % stopped but not deleted
            case supervisor:restart_child(?SUP, Id) of
                {ok, _} -> started;
                {error, running} -> already_started;
                {error, Why} -> {error, Why}
            end;
        {error, Why} -> {error, Why}
    end.

stop_child(#{id := Id}) ->
    _ = supervisor:terminate_child(?SUP, Id),
    _ = supervisor:delete_child(?SUP, Id),
    ok.

-spec reload(binary(), gen_mod:opts(), gen_mod:opts()) -> ok.
reload(_Host, _NewOpts, _OldOpts) ->
    ok.

-spec depends(binary(), gen_mod:opts()) -> [{module(), hard | soft}].
depends(_Host, _Opts) ->
    [].

%% The module reads no option (start/2, reload/3 and depends/2 ignore theirs), so it declares
%% none: ejabberd builds a module's option validators from mod_options/1 alone, and refuses any
%% option not listed there at config load ("unknown option ... There are no available options").
%% An option added here must be read by the code, listed in mod_options/1 with its default and
%% given its econf type by a mod_opt_type/1 clause of its own (an optional callback, and no
%% catch-all clause: tests/test_plugin_options.py holds the three together with ejabberd.yml.j2).
-spec mod_options(binary()) -> [{atom(), term()} | atom()].
mod_options(_Host) ->
    [].

-spec mod_doc() -> #{desc => binary() | [binary()]}.
mod_doc() ->
    #{desc => [<<"Cluster status, multi-master joins, drain and delivery guards (easycluster).">>]}.

-spec commands() -> [ejabberd_commands()].
commands() ->
    [#ejabberd_commands{name = easy_cluster_status, tags = [cluster],
                        desc = "This node's view of the cluster, as one line of JSON",
                        module = ?MODULE, function = status,
                        args = [], result = {res, restuple}},
     #ejabberd_commands{name = easy_cluster_statuses, tags = [cluster],
                        desc = "Every member's easy_cluster_status, asked from this node, as JSON",
                        module = ?MODULE, function = statuses,
                        args = [], result = {res, restuple}},
     #ejabberd_commands{name = easy_cluster_forget, tags = [cluster],
                        desc = "Remove stopped node Node from the cluster schema",
                        module = ?MODULE, function = forget,
                        args_desc = ["Name of the stopped node to forget"],
                        args = [{node, string}], result = {res, restuple}},
     #ejabberd_commands{name = easy_cluster_drain, tags = [cluster],
                        desc = "Close the listeners and every client session here, before a stop",
                        module = ?MODULE, function = drain,
                        args_desc = ["Seconds to wait at most for the sessions to end"],
                        args = [{seconds, integer}], result = {res, restuple}},
     #ejabberd_commands{name = easy_cluster_offline_export, tags = [cluster],
                        desc = "Write the offline messages stored here since a peer was lost to File (heal)",
                        module = ?MODULE, function = offline_export,
                        args_desc = ["File to write (the node's user writes it)"],
                        args = [{file, string}], result = {res, restuple}},
     #ejabberd_commands{name = easy_cluster_offline_import, tags = [cluster],
                        desc = "Store the offline messages of File (from offline_export) that are not here yet",
                        module = ?MODULE, function = offline_import,
                        args_desc = ["File written by easy_cluster_offline_export"],
                        args = [{file, string}], result = {res, restuple}},
     #ejabberd_commands{name = easy_cluster_partition_clear, tags = [cluster],
                        desc = "Forget the partitions Mnesia reported (after a heal)",
                        module = ?MODULE, function = partition_clear,
                        args = [], result = {res, restuple}},
     #ejabberd_commands{name = easy_cluster_set_master, tags = [cluster],
                        desc = "Load every table from these nodes at the next start (none: clear)",
                        module = ?MODULE, function = set_master,
                        args_desc = ["Comma-separated node names, or none"],
                        args = [{nodes, string}], result = {res, restuple}},
     #ejabberd_commands{name = easy_cluster_backup, tags = [cluster],
                        desc = "A full Mnesia backup (what mnesia:backup writes), as of this call",
                        longdesc = "Same file format and contents as `ejabberdctl backup`, for "
                                   "`ejabberdctl restore` too, written much faster for "
                                   "disc_only_copies tables. Run with ejabberdctl --no-timeout.",
                        module = ?MODULE, function = backup,
                        args_desc = ["Path of the backup file to write on this host"],
                        args = [{path, string}], result = {res, restuple}},
     #ejabberd_commands{name = easy_cluster_restore, tags = [cluster],
                        desc = "Replace every disc table's contents, cluster-wide, with a backup's",
                        module = ?MODULE, function = restore,
                        args_desc = ["Path of a full Mnesia backup on this host"],
                        args = [{path, string}], result = {res, restuple}},
     #ejabberd_commands{name = easy_cluster_cookie, tags = [cluster],
                        desc = "Rotate this node's Erlang cookie at runtime: peers | self | check",
                        longdesc = "The new cookie is read from $HOME/" ++ easy_cluster_cookie:staging_name() ++
                                   ", never from the command line.",
                        module = ?MODULE, function = cookie,
                        args_desc = ["peers, self or check"],
                        args = [{phase, string}], result = {res, restuple}},
     #ejabberd_commands{name = easy_cluster_metrics, tags = [cluster],
                        desc = "This node's metrics in Prometheus's text format (what it writes for node-exporter)",
                        module = easy_cluster_metrics, function = command,
                        args = [], result = {res, restuple}},
     #ejabberd_commands{name = easy_cluster_tables, tags = [cluster],
                        desc = "Every table's record name, attributes, size and copies, as JSON",
                        module = ?MODULE, function = tables,
                        args = [], result = {res, restuple}},
     #ejabberd_commands{name = easy_cluster_code_path, tags = [cluster],
                        desc = "Add library directories installed since the node started to its code path",
                        longdesc = "A driver installed while the node runs (erlang-p1-pgsql) then loads "
                                   "without a restart.",
                        module = ?MODULE, function = code_path, args = [], result = {res, restuple}},
     #ejabberd_commands{name = easy_cluster_sql_export, tags = [cluster],
                        desc = "Export the vhost's stores from Mnesia into the SQL database (fab migrate-to-sql)",
                        module = ?MODULE, function = sql_export,
                        args_desc = ["vhost"], args = [{host, string}], result = {res, restuple}},
     #ejabberd_commands{name = easy_cluster_sql_delta, tags = [cluster],
                        desc = "Copy what Mnesia received after an export into the SQL database",
                        longdesc = "Accounts and roster items the database lacks, and offline messages "
                                   "stored at or after Since (Unix seconds).",
                        module = ?MODULE, function = sql_delta,
                        args_desc = ["vhost", "Unix seconds"], args = [{host, string}, {since, string}],
                        result = {res, restuple}},
     #ejabberd_commands{name = easy_cluster_records, tags = [cluster],
                        desc = "The records the headers (*.hrl) in Dir define, as JSON",
                        longdesc = "For an upgrade's plan: Dir is the include directory of the "
                                   "ejabberd version the cluster is to run.",
                        module = ?MODULE, function = records,
                        args_desc = ["Directory of *.hrl files"],
                        args = [{dir, string}], result = {res, restuple}}].

%%%===================================================================
%%% The API: commands, calls over RPC, init's -s
%%%===================================================================
-spec status() -> easy_cluster_json:answer().
status() -> easy_cluster_status:status().

-spec statuses() -> easy_cluster_json:answer().
statuses() -> easy_cluster_status:statuses().

%% Also called on every member by easy_cluster_statuses.
-spec status_map() -> map().
status_map() -> easy_cluster_status:status_map().

-spec forget(string()) -> easy_cluster_json:answer().
forget(NodeStr) -> easy_cluster_schema:forget(NodeStr).

-spec set_master(string()) -> easy_cluster_json:answer().
set_master(NodesStr) -> easy_cluster_schema:set_master(NodesStr).

-spec force_load() -> string().
force_load() -> easy_cluster_schema:force_load().

-spec backup(string()) -> easy_cluster_json:answer().
backup(PathStr) -> easy_cluster_backup:backup(PathStr).

-spec restore(string()) -> easy_cluster_json:answer().
restore(PathStr) -> easy_cluster_backup:restore(PathStr).

-spec drain(integer()) -> easy_cluster_json:answer().
drain(Seconds) -> easy_cluster_drain:drain(Seconds).

-spec partition_clear() -> easy_cluster_json:answer().
partition_clear() ->
    ok = easy_cluster_partition:clear(),
    easy_cluster_json:ok(#{ok => true}).

%% Called on every member when a node joins afresh or is forgotten.
-spec partition_forget(node()) -> ok.
partition_forget(Node) -> easy_cluster_partition:forget(Node).

-spec cookie(string()) -> easy_cluster_json:answer().
cookie(Phase) -> easy_cluster_cookie:cookie(Phase).

-spec tables() -> easy_cluster_json:answer().
tables() -> easy_cluster_schema:tables().

-spec records(string()) -> easy_cluster_json:answer().
records(Dir) -> easy_cluster_schema:records(Dir).

-spec code_path() -> easy_cluster_json:answer().
code_path() -> easy_cluster_sql:code_path().

-spec sql_export(string()) -> easy_cluster_json:answer().
sql_export(Host) -> easy_cluster_sql:export(Host).

-spec sql_delta(string(), string()) -> easy_cluster_json:answer().
sql_delta(Host, Since) -> easy_cluster_sql:delta(Host, Since).

-spec boot_join() -> ok.
boot_join() -> easy_cluster_join:boot_join().

-spec boot_hold() -> ok.
boot_hold() -> easy_cluster_upgrade:boot_hold().

-spec boot_satellite() -> ok.
boot_satellite() -> easy_cluster_satellite:boot_satellite().

-spec offline_export(string()) -> easy_cluster_json:answer().
offline_export(File) -> easy_cluster_offline:offline_export(File).

-spec offline_import(string()) -> easy_cluster_json:answer().
offline_import(File) -> easy_cluster_offline:offline_import(File).
