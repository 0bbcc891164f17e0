%%% easy_cluster: cluster status and multi-master joins for ejabberd, as ejabberdctl commands.
%%%
%%% Every command answers one line of JSON so that the toolkit (and monitoring) can read it:
%%%   ejabberdctl easy_cluster_status            -> this node's view of the cluster
%%%   ejabberdctl easy_cluster_forget N          -> remove a stopped node N from the schema
%%%
%%% Joins: boot_join, during a node's start, before ejabberd starts (`-s easy_cluster boot_join`
%%% ahead of `-s ejabberd`, written by the toolkit for that one start). It follows what
%%% ejabberd's own join_cluster does (23.01), but checks the result of every step, copies every
%%% table (also for the 3rd, 4th... master), waits for the tables with a bound, and rolls back
%%% what it did when a step fails. It is the only join: nothing here ever stops the ejabberd
%%% application inside a running VM, which under systemd (Type=notify) sends STOPPING=1 and
%%% leaves the unit deactivating until systemd kills the node. A running node joins by being
%%% stopped through its unit and started again with the join.
%%%
%%% Delivery: three hooks close races in which ejabberd 23.01 loses a message around a session
%%% that starts or ends while other nodes route to it (see "Delivery" below), and the drain
%%% takes a node's sessions out of routing before it ends them.
-module(easy_cluster).
-behaviour(gen_mod).

-export([start/2, stop/1, reload/3, depends/2, mod_options/1, mod_opt_type/1, mod_doc/0]).
-export([status/0, statuses/0, status_map/0, forget/1, set_master/1, backup/1, restore/1, drain/1]).
%% Called over RPC from a hidden node while ejabberd itself still waits for its tables.
-export([force_load/0]).
-export([partition_clear/0, partition_forget/1]).
-export([cookie/1]).
%% Run by init (-s) during a node's first start, before ejabberd.
-export([boot_join/0]).
%% Hooks (delivery).
-export([publish_presence/1, offline_recheck/1, c2s_handle_info/2]).
%% Heal: offline messages stored on the losing side carried over to the winner's data.
-export([offline_export/1, offline_import/1]).

-include("ejabberd_commands.hrl").
-include("logger.hrl").
-include("xmpp.hrl").     % erlang-p1-xmpp (the toolkit passes its include directory)

-define(PLUGIN_VERSION, <<"1.6.0">>).
%% How long a boot join waits at most for the copied tables to load.
-define(JOIN_WAIT_SECONDS, 600).
%% A restuple code other than `error` makes ejabberdctl print our JSON as it is (with
%% `error` it prints an Erlang term), and exit with this status.
-define(FAILED, 1).
%% boot_join reports its progress here, a line per step and per table copied.
-define(PROGRESS_FILE, "/run/ejabberd/easy_cluster_join.log").
%% Fault injection for the toolkit's tests: while this file exists, a join waits (at most
%% PAUSE_MAX_MS) before copying tables, so a test can kill or cut off a node mid-join.
-define(PAUSE_FILE, "/run/ejabberd/easy_cluster_join.pause").
-define(PAUSE_MAX_MS, 60000).
%% boot_join waits for this file (the toolkit's "your turn": joins run one at a time) at most
%% GO_MAX_MS, then gives up and halts the VM; nothing has changed by then.
-define(GO_FILE, "/run/ejabberd/easy_cluster_join.go").
-define(GO_MAX_MS, 600000).
%% A failed boot join halts the VM with this status; the toolkit's drop-in for ejabberd.service
%% lists it in RestartPreventExitStatus=, so systemd does not start the node again (it would
%% come up standalone, with a schema of its own).
-define(JOIN_FAILED_EXIT, 78).
%% While a boot join waits and copies, ejabberd's unit is still starting (Type=notify, no
%% READY=1 yet): the join asks systemd for EXTEND_TIMEOUT_USEC more every EXTEND_EVERY_MS, so a
%% long wait for its turn or a big table copy never hits the unit's start timeout.
-define(EXTEND_EVERY_MS, 10000).
-define(EXTEND_USEC, 60000000).
%% A drained session is out of routing this long before it is ended: messages other nodes
%% routed to it just before are delivered on the open stream, not to a closing one.
-define(DRAIN_GRACE_MS, 1000).
%% Remembers the partitions Mnesia reported since this node started: once the link is back the
%% nodes see each other running again, but their data may have diverged until a heal.
-define(WATCHER, easy_cluster_partitions).

%%%===================================================================
%%% gen_mod
%%%===================================================================
start(Host, _Opts) ->
    ensure_partition_watcher(),
    %% the courier of cross-node messages (ejabberd_cluster_easy), one per node, supervised
    case supervisor:start_child(ejabberd_gen_mod_sup, ejabberd_cluster_easy:child_spec()) of
        {ok, _} -> ok;
        {error, {already_started, _}} -> ok;
        {error, Why} -> ?ERROR_MSG("easy_cluster: the courier did not start: ~p", [Why])
    end,
    lists:foreach(fun({Hook, Fun, Seq}) -> ejabberd_hooks:add(Hook, Host, ?MODULE, Fun, Seq) end,
                  hooks()),
    ejabberd_commands:register_commands(?MODULE, commands() ++ cookie_commands()).

stop(Host) ->
    lists:foreach(fun({Hook, Fun, Seq}) -> ejabberd_hooks:delete(Hook, Host, ?MODULE, Fun, Seq) end,
                  hooks()),
    case gen_mod:is_loaded_elsewhere(Host, ?MODULE) of
        true -> ok;
        false -> ejabberd_commands:unregister_commands(commands() ++ cookie_commands())
    end.

%% mod_offline stores at 50 (offline_message_hook) and delivers at 50 (c2s_self_presence).
hooks() ->
    [{c2s_self_presence, publish_presence, 10},
     {offline_message_hook, offline_recheck, 100},
     {c2s_handle_info, c2s_handle_info, 10}].

reload(_Host, _NewOpts, _OldOpts) ->
    ok.

depends(_Host, _Opts) ->
    [].

mod_opt_type(_) ->
    econf:any().

mod_options(_Host) ->
    [].

mod_doc() ->
    #{desc => ["Cluster status, multi-master joins, drain and delivery guards (easycluster)."]}.

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
                        args = [{path, string}], result = {res, restuple}}].

%%%===================================================================
%%% easy_cluster_status
%%%===================================================================
status() ->
    {ok, json(status_map())}.

%% Every member's own status, asked from here in one go: the toolkit's checks after a change
%% make one ejabberdctl call (a VM of its own, ~0.2 s of CPU) rather than one per host.
%% A member that does not answer maps to the error.
statuses() ->
    Members = mnesia:system_info(db_nodes),
    Results = erpc:multicall(Members, ?MODULE, status_map, [], 5000),
    {ok, json(#{statuses => maps:from_list(
                              [{N, case R of
                                       {ok, M} when is_map(M) -> M;
                                       Error -> #{error => fmt(Error)}
                                   end} || {N, R} <- lists:zip(Members, Results)])})}.

status_map() ->
    Tables = mnesia:system_info(tables),
    Missing = missing_tables(),
    SchemaType = mnesia:table_info(schema, storage_type),
    Replicas = maps:from_list(
                 [{T, maps:from_list([{N, Type} || {N, Type} <- where_to_commit(T)])}
                  || T <- Tables]),
    #{node => node(),
      plugin_version => ?PLUGIN_VERSION,
      ejabberd_version => ejabberd_version(),
      otp_release => list_to_binary(erlang:system_info(otp_release)),
      started_at => started_at(),
      db_nodes => mnesia:system_info(db_nodes),
      running_db_nodes => mnesia:system_info(running_db_nodes),
      schema => SchemaType,
      master => is_master(),
      missing_tables => Missing,
      tables => Replicas,
      partitioned_with => partitioned_with(),
      master_nodes => lists:usort(
                        lists:append([mnesia:table_info(T, master_nodes)
                                      || T <- Tables])),
      sessions => safe(fun() -> length(ejabberd_sm:dirty_get_my_sessions_list()) end),
      registered_users => safe(fun registered_users/0)}.

%% Tables of the cluster this node holds no copy of.
missing_tables() ->
    [T || T <- mnesia:system_info(tables), mnesia:table_info(T, storage_type) == unknown].

%% A master holds a copy of every table and keeps the schema on disc.
is_master() ->
    mnesia:table_info(schema, storage_type) == disc_copies andalso missing_tables() == [].

where_to_commit(Table) ->
    try mnesia:table_info(Table, where_to_commit)
    catch _:_ -> []
    end.

registered_users() ->
    lists:sum([ejabberd_auth:count_users(H) || H <- ejabberd_option:hosts()]).

%% The VM's start, in Unix seconds: a restart shows as a new value.
started_at() ->
    erlang:convert_time_unit(erlang:system_info(start_time) + erlang:time_offset(),
                             native, second).

ejabberd_version() ->
    case application:get_key(ejabberd, vsn) of
        {ok, Vsn} -> list_to_binary(Vsn);
        undefined -> null
    end.

safe(Fun) ->
    try Fun() catch _:_ -> null end.

%%%===================================================================
%%% boot_join
%%%===================================================================
%% Each step returns ok | {ok, Info} | {error, Reason}; the first error stops the join and
%% Undo (what the steps so far did, newest first) is run to roll back.
%% The steps of the join once the local schema is about to go. Mnesia runs on as the permanent
%% application ejabberd wants (if it dies, the node goes with it): a restart of Mnesia would
%% load every table once more, from a peer (1.3 s at 100,000 users).
join_steps(Seed, Wait, StartMnesia) ->
    [{delete_schema, fun() -> mnesia:delete_schema([node()]) end, leave_seed_schema},
     {start_mnesia, StartMnesia, none},
     {extra_db_nodes, fun() -> extra_db_nodes(Seed) end, none},
     {schema_disc_copies, fun() -> schema_disc_copies() end, none},
     {pause_point, fun() -> pause_point() end, none},
     {copy_tables, fun() -> copy_tables(Seed) end, none},
     {wait_for_tables, fun() -> wait_for_tables(Wait) end, none}].

%% `-s easy_cluster boot_join` with `-easy_cluster_join_seed NODE` (the toolkit writes both for
%% a node's first start only; see templates/ejabberd.default.j2). The VM boots, loads ejabberd's
%% code while it waits for GO_FILE, joins, and returns to init, which starts ejabberd on the
%% copied tables. A node that already has a schema of its own is never touched: it starts as
%% it is. A failed join is rolled back (out of the seed's schema, nothing on disc) and the VM
%% halts, so the node never comes up standalone. Progress and the result go to PROGRESS_FILE.
boot_join() ->
    case init:get_argument(easy_cluster_join_seed) of
        {ok, [[SeedStr]]} ->
            Schema = filename:join(mnesia:system_info(directory), "schema.DAT"),
            case filelib:is_file(Schema) of
                true -> ?WARNING_MSG("easy_cluster: ~s exists: not joining at boot", [Schema]);
                false -> boot_join(list_to_atom(SeedStr))
            end;
        _ -> ok
    end.

boot_join(Seed) ->
    _ = file:write_file(?PROGRESS_FILE, <<>>),
    Extender = spawn_link(fun() -> extend_start_timeout() end),
    progress("waiting", []),
    _ = application:load(ejabberd),
    {ok, Modules} = application:get_key(ejabberd, modules),
    _ = code:ensure_modules_loaded(Modules),   % off the joins' critical path
    build_translation_cache(),
    T0 = erlang:monotonic_time(millisecond),
    ok = wait_for_file(?GO_FILE, T0 + ?GO_MAX_MS),
    Steps = [{wait_for_turn, fun() -> wait_for_turn(T0) end, none},
             {ping, fun() -> ping(Seed) end, none},
             {versions, fun() -> same_versions(Seed) end, none},
             {seed_running, fun() -> seed_running(Seed) end, none},
             {forget_stale_entry, fun() -> forget_stale_entry(Seed) end, none}
             | join_steps(Seed, ?JOIN_WAIT_SECONDS, fun() -> start_permanent(mnesia) end)],
    {Result, Json} = run_steps(Seed, Steps, [], []),
    progress("result ~s", [Json]),
    unlink(Extender),
    exit(Extender, kill),
    case Result of
        ok -> ok;
        _ -> timer:sleep(100), erlang:halt(?JOIN_FAILED_EXIT)    % the log lines reach the disc first
    end.

%% Under systemd: keep pushing the unit's start timeout out while the join runs (see
%% EXTEND_EVERY_MS). Without NOTIFY_SOCKET (not started by systemd) there is nothing to do.
extend_start_timeout() ->
    Msg = "EXTEND_TIMEOUT_USEC=" ++ integer_to_list(?EXTEND_USEC),
    case sd_notify(Msg) of
        ok -> timer:sleep(?EXTEND_EVERY_MS), extend_start_timeout();
        _ -> ok
    end.

-spec sd_notify(string()) -> ok | no_socket | {error, term()}.
sd_notify(Msg) ->
    case os:getenv("NOTIFY_SOCKET") of
        false -> no_socket;
        "" -> no_socket;
        Path0 ->
            Path = case Path0 of
                       [$@ | Abstract] -> <<0, (list_to_binary(Abstract))/binary>>;
                       _ -> list_to_binary(Path0)
                   end,
            case gen_udp:open(0, [local]) of
                {ok, Sock} ->
                    R = gen_udp:send(Sock, {local, Path}, 0, Msg),
                    gen_udp:close(Sock),
                    R;
                {error, _} = E -> E
            end
    end.

%% ejabberd's first start on a node builds a cache of every translation in the Mnesia directory
%% (~1 s of CPU; later starts read it). Build it now, while the node waits for its turn, with
%% the translate server's own init (it needs the xmpp application, which ejabberd would start
%% anyway), in a process of its own: the table it makes goes with it, the file stays.
%% Best effort: ejabberd builds the cache itself if there is none.
build_translation_cache() ->
    try
        {ok, _} = application:ensure_all_started(xmpp),
        {Pid, Ref} = spawn_monitor(fun() -> exit({built, translate:init([])}) end),
        receive {'DOWN', Ref, process, Pid, _} -> ok
        after 30000 -> exit(Pid, kill)
        end
    catch _:_ -> ok
    end.

wait_for_turn(T0) ->
    case filelib:is_file(?GO_FILE) of
        true -> {ok, #{waited_ms => erlang:monotonic_time(millisecond) - T0}};
        false -> {error, {no_turn_within_ms, ?GO_MAX_MS}}
    end.

wait_for_file(File, Deadline) ->
    case filelib:is_file(File) orelse erlang:monotonic_time(millisecond) >= Deadline of
        true -> ok;
        false -> timer:sleep(20), wait_for_file(File, Deadline)
    end.

run_steps(Seed, [], Done, _Undo) ->
    ?INFO_MSG("easy_cluster: joined ~p as a master", [Seed]),
    forget_partitions_everywhere(node()),
    {ok, json(#{ok => true, seed => Seed, steps => lists:reverse(Done)})};
run_steps(Seed, [{Name, Fun, UndoAction} | Rest], Done, Undo) ->
    T0 = erlang:monotonic_time(millisecond),
    progress("step ~s", [Name]),
    Result = try Fun()
             catch Class:Reason -> {error, {Class, Reason}}
             end,
    Ms = erlang:monotonic_time(millisecond) - T0,
    Undo1 = case UndoAction of none -> Undo; _ -> [UndoAction | Undo] end,
    case Result of
        ok ->
            run_steps(Seed, Rest, [#{step => Name, ms => Ms} | Done], Undo1);
        {ok, Info} ->
            run_steps(Seed, Rest, [#{step => Name, ms => Ms, info => fmt(Info)} | Done], Undo1);
        {error, Why} ->
            ?ERROR_MSG("easy_cluster: join of ~p failed at ~p: ~p", [Seed, Name, Why]),
            {RolledBack, UndoNotes} = roll_back(Seed, Undo),
            {?FAILED, json(#{ok => false, seed => Seed, failed_step => Name, reason => fmt(Why),
                           steps => lists:reverse([#{step => Name, ms => Ms} | Done]),
                           rolled_back => RolledBack, rollback => UndoNotes})}
    end.

%% Once the local schema is gone the node cannot go back to its old data (it held none: the
%% toolkit refuses to join a node with users). Rolling back then means: out of the seed's
%% schema, no local Mnesia files, ejabberd left stopped for the toolkit to stop the VM.
roll_back(Seed, Undo) ->
    Notes = [undo(Seed, Action) || Action <- Undo],
    {lists:all(fun(#{ok := Ok}) -> Ok end, Notes), Notes}.

undo(Seed, leave_seed_schema) ->
    _ = application:stop(mnesia),
    Del = forget_stale_entry(Seed),
    Wipe = mnesia:delete_schema([node()]),
    note(leave_seed_schema, both(Del, Wipe)).

note(Action, ok) -> #{action => Action, ok => true};
note(Action, {error, Why}) -> #{action => Action, ok => false, reason => fmt(Why)}.

both(ok, ok) -> ok;
both(ok, Err) -> Err;
both(Err, _) -> Err.

%%% The steps -----------------------------------------------------------

ping(Seed) when Seed == node() -> {error, cannot_join_itself};
ping(Seed) ->
    case net_adm:ping(Seed) of
        pong -> ok;
        pang -> {error, {no_ping, Seed}}
    end.

same_versions(Seed) ->
    Mine = {ejabberd_version(), erlang:system_info(otp_release)},
    Theirs = {rpc:call(Seed, application, get_key, [ejabberd, vsn], 10000),
              rpc:call(Seed, erlang, system_info, [otp_release], 10000)},
    case Theirs of
        {{ok, V}, Otp} when is_list(V) ->
            case {list_to_binary(V), Otp} == Mine of
                true -> ok;
                false -> {error, {versions_differ, #{here => Mine, seed => Theirs}}}
            end;
        _ -> {error, {seed_unreachable, Theirs}}
    end.

seed_running(Seed) ->
    case rpc:call(Seed, mnesia, system_info, [running_db_nodes], 10000) of
        Running when is_list(Running) ->
            case lists:member(Seed, Running) of
                true -> {ok, #{seed_running_db_nodes => Running}};
                false -> {error, seed_mnesia_not_running}
            end;
        Other -> {error, {seed_unreachable, Other}}
    end.

%% A node that was wiped and joins again is still in the seed's schema: mnesia would refuse it
%% (merge_schema_failed, ejabberd #4164) until that stale entry goes.
forget_stale_entry(Seed) ->
    case rpc:call(Seed, mnesia, system_info, [db_nodes], 10000) of
        Nodes when is_list(Nodes) ->
            case lists:member(node(), Nodes) of
                true -> atomic(rpc:call(Seed, mnesia, del_table_copy, [schema, node()], 30000));
                false -> ok
            end;
        Other -> {error, {seed_unreachable, Other}}
    end.

extra_db_nodes(Seed) ->
    case mnesia:change_config(extra_db_nodes, [Seed]) of
        {ok, Connected} ->
            case lists:member(Seed, Connected) of
                true -> ok;
                false -> {error, {not_connected, Seed}}
            end;
        {error, Why} -> {error, Why}
    end.

schema_disc_copies() ->
    case mnesia:change_table_copy_type(schema, node(), disc_copies) of
        {atomic, ok} -> ok;
        {aborted, {already_exists, schema, _, disc_copies}} -> ok;
        {aborted, Why} -> {error, Why}
    end.

%% One add_table_copy per table, with the storage type the table has on the seed (or, for a
%% table the seed holds no copy of, on any node that has one).
copy_tables(Seed) ->
    Tables = mnesia:system_info(tables) -- [schema],
    copy_tables(Seed, Tables, 0).

copy_tables(_Seed, [], N) -> {ok, #{tables => N}};
copy_tables(Seed, [T | Rest], N) ->
    case storage_type_on(Seed, T) of
        {ok, Type} ->
            T0 = erlang:monotonic_time(millisecond),
            case mnesia:add_table_copy(T, node(), Type) of
                {atomic, ok} ->
                    progress("table ~s ~s ~B ~B", [T, Type, mnesia:table_info(T, size),
                                                   erlang:monotonic_time(millisecond) - T0]),
                    copy_tables(Seed, Rest, N + 1);
                {aborted, {already_exists, T, _}} -> copy_tables(Seed, Rest, N + 1);
                {aborted, Why} -> {error, {add_table_copy, T, Type, Why}}
            end;
        {error, Why} -> {error, {storage_type, T, Why}}
    end.

storage_type_on(Seed, T) ->
    case rpc:call(Seed, mnesia, table_info, [T, storage_type], 10000) of
        Type when Type == ram_copies; Type == disc_copies; Type == disc_only_copies ->
            {ok, Type};
        unknown ->
            case [Ty || {_N, Ty} <- where_to_commit(T)] of
                [Type | _] -> {ok, Type};
                [] -> {error, no_copy_anywhere}
            end;
        Other -> {error, Other}
    end.

pause_point() ->
    case filelib:is_file(?PAUSE_FILE) of
        true ->
            progress("paused", []),
            wait_for_no_file(?PAUSE_FILE, erlang:monotonic_time(millisecond) + ?PAUSE_MAX_MS);
        false -> ok
    end.

wait_for_no_file(File, Deadline) ->
    case filelib:is_file(File) andalso erlang:monotonic_time(millisecond) < Deadline of
        true -> timer:sleep(100), wait_for_no_file(File, Deadline);
        false -> ok
    end.

progress(Format, Args) ->
    Line = io_lib:format(Format ++ "~n", Args),
    ?INFO_MSG("easy_cluster: ~s", [string:trim(Line)]),
    _ = file:write_file(?PROGRESS_FILE, Line, [append]),
    ok.

wait_for_tables(Seconds) ->
    case mnesia:wait_for_tables(mnesia:system_info(local_tables), Seconds * 1000) of
        ok -> ok;
        {timeout, Bad} -> {error, {tables_not_loaded_within, Seconds, Bad}};
        {error, Why} -> {error, Why}
    end.

start_permanent(App) ->
    case application:start(App, permanent) of
        ok -> ok;
        {error, {already_started, App}} -> ok;
        {error, Why} -> {error, Why}
    end.

atomic({atomic, ok}) -> ok;
atomic({aborted, Why}) -> {error, Why};
atomic({badrpc, Why}) -> {error, {badrpc, Why}};
atomic(Other) -> {error, Other}.

%%%===================================================================
%%% easy_cluster_forget: offline removal of a dead node
%%%===================================================================
forget(NodeStr) ->
    Node = list_to_atom(NodeStr),
    Result =
        case {Node == node(), lists:member(Node, mnesia:system_info(db_nodes))} of
            {true, _} -> {error, cannot_forget_itself};
            {_, false} -> {ok, not_a_member};
            {_, true} ->
                %% A node cut off by a broken link still counts as running until the
                %% distribution's tick notices (up to net_ticktime); ping waits for that.
                case net_adm:ping(Node) of
                    pong -> {error, node_is_running};
                    pang ->
                        case wait_not_running(Node, erlang:monotonic_time(millisecond) + 30000) of
                            ok -> case atomic(mnesia:del_table_copy(schema, Node)) of
                                      ok -> forget_partitions_everywhere(Node), {ok, forgotten};
                                      Err -> Err
                                  end;
                            Err -> Err
                        end
                end
        end,
    case Result of
        {ok, What} ->
            {ok, json(#{ok => true, node => Node, result => What,
                        db_nodes => mnesia:system_info(db_nodes)})};
        {error, Why} ->
            {?FAILED, json(#{ok => false, node => Node, reason => fmt(Why)})}
    end.

wait_not_running(Node, Deadline) ->
    case lists:member(Node, mnesia:system_info(running_db_nodes)) of
        false -> ok;
        true ->
            case erlang:monotonic_time(millisecond) < Deadline of
                true -> timer:sleep(200), wait_not_running(Node, Deadline);
                false -> {error, still_in_running_db_nodes}
            end
    end.

%%%===================================================================
%%% Runbooks: partition heal, start after outage, restore
%%%===================================================================
%% Before a node stops. (1) No new client connections here. (2) Every local session leaves the
%% routing table on every node at once (a synchronous delete): from then on the cluster routes a
%% message for these users to their other sessions or to offline storage, never to a session
%% that is about to end. (3) A grace period lets messages routed just before arrive on the still
%% open streams, where they are delivered. (4) Each session is stopped the orderly way: stream
%% management hands its unacknowledged messages back to the router, the session hands back
%% what is still queued for it, and the client gets its closing stream tag. Ending a stream
%% while it is still in the routing table (what ejabberd_c2s:close/1 does) loses what other
%% nodes route to it in between: ejabberd writes those to the closed socket.
drain(Seconds) ->
    ok = ejabberd_listener:stop_listeners(),
    Sessions = ejabberd_sm:dirty_get_my_sessions_list(),
    SIDs = [element(2, S) || S <- Sessions],
    ok = unpublish(SIDs),
    timer:sleep(?DRAIN_GRACE_MS),
    Pids = [Pid || {_, Pid} <- SIDs],
    lists:foreach(fun(Pid) -> ejabberd_c2s:stop_async(Pid) end, Pids),
    Left = wait_gone(Pids, erlang:monotonic_time(millisecond) + Seconds * 1000),
    {ok, json(#{ok => true, closed => length(Pids), left => Left})}.

-spec unpublish([ejabberd_sm:sid()]) -> ok.
unpublish(SIDs) ->
    mnesia:sync_dirty(fun() -> lists:foreach(fun(SID) -> mnesia:delete({session, SID}) end, SIDs) end).

wait_gone(Pids, Deadline) ->
    case length([P || P <- Pids, is_process_alive(P)]) of
        0 -> 0;
        N ->
            case erlang:monotonic_time(millisecond) < Deadline of
                true -> timer:sleep(100), wait_gone(Pids, Deadline);
                false -> N
            end
    end.

%%%===================================================================
%%% Delivery
%%%===================================================================
%% ejabberd writes session changes to its replicated `session` table with dirty writes, which
%% reach the other nodes a little later. Two ways that lost messages:
%%
%% A client's initial presence makes its session available (priority >= 0), then mod_offline
%% hands it the messages stored while it was away. Another node, not yet aware of the new
%% priority, stores a message offline after that hand-over: it waits there until the user's next
%% login (seen in rolling restarts: messages sent to a user in the second before it was back).
%% publish_presence: before mod_offline's hand-over, the session as this node has it is written
%% again, synchronously, to every node. offline_recheck: after a message is stored offline, if
%% its user has an available session by now (it became available between the routing decision
%% and the store), that session is told to fetch its offline messages again. mod_offline's store
%% and fetch are transactions on the same key, so either the store comes first and the fetch at
%% presence takes it, or it comes after the synchronous publish and the recheck sees the session.
%% Each stored message is fetched exactly once.
-spec publish_presence({presence(), ejabberd_c2s:state()}) -> {presence(), ejabberd_c2s:state()}.
publish_presence({#presence{type = available}, #{sid := SID}} = Acc) ->
    try mnesia:dirty_read(session, SID) of
        [] -> ok;
        Records -> mnesia:sync_dirty(fun() -> lists:foreach(fun mnesia:write/1, Records) end)
    catch Class:Why ->
        ?WARNING_MSG("easy_cluster: could not publish session ~p: ~p:~p", [SID, Class, Why])
    end,
    Acc;
publish_presence(Acc) ->
    Acc.

-spec offline_recheck({atom(), message()}) -> {atom(), message()}.
offline_recheck({offlined, #message{to = #jid{luser = U, lserver = S}}} = Acc) ->
    refetch(U, S),
    Acc;
offline_recheck(Acc) ->
    Acc.

%% Tell the user's available sessions, wherever they are, to fetch their offline messages.
-spec refetch(binary(), binary()) -> ok.
refetch(U, S) ->
    Available = [R || {Prio, R} <- ejabberd_sm:get_user_present_resources(U, S),
                      is_integer(Prio), Prio >= 0],
    lists:foreach(fun(R) -> ejabberd_sm:route(jid:make(U, S, R), easy_cluster_refetch) end, Available).

%% A heal restarts the losing side with the winner's data: what it wrote during the partition
%% is discarded, and with it the messages it stored offline for users it could not reach on the
%% other side (seen in `make load`: hundreds in a 25 s partition). Before the restart, the
%% toolkit has the loser write the offline messages stored since it lost a peer (older ones the
%% winner has too, or delivered meanwhile) to a file; after it, they are stored again, those
%% not there yet, and fetched by their users' available sessions.
offline_export(File) ->
    Since = lost_peer_since(),
    Records = case lists:member(offline_msg, mnesia:system_info(tables)) of
                  true ->
                      All = mnesia:dirty_match_object(mnesia:table_info(offline_msg, wild_pattern)),
                      [R || R <- All, Since == always orelse element(3, R) >= Since];
                  false -> []        % offline messages not in Mnesia (SQL): nothing discarded
              end,
    case file:write_file(File, term_to_binary(Records)) of
        ok -> {ok, json(#{ok => true, messages => length(Records)})};
        {error, Why} -> {?FAILED, json(#{ok => false, reason => fmt({File, Why})})}
    end.

offline_import(File) ->
    case file:read_file(File) of
        {ok, Bin} ->
            Records = binary_to_term(Bin),
            Missing = [R || R <- Records, not lists:member(R, mnesia:dirty_read(offline_msg, element(2, R)))],
            case mnesia:transaction(fun() -> lists:foreach(fun mnesia:write/1, Missing) end) of
                {atomic, ok} ->
                    Users = lists:usort([element(2, R) || R <- Missing]),
                    %% mod_offline caches each user's message count on every node: written here
                    %% behind its back, the counts are dropped everywhere
                    lists:foreach(fun(US) -> forget_offline_count(US) end, Users),
                    lists:foreach(fun({U, S}) -> refetch(U, S) end, Users),
                    {ok, json(#{ok => true, imported => length(Missing), read => length(Records)})};
                {aborted, Why} -> {?FAILED, json(#{ok => false, reason => fmt(Why)})}
            end;
        {error, Why} -> {?FAILED, json(#{ok => false, reason => fmt({File, Why})})}
    end.

forget_offline_count(US) ->
    try ets_cache:delete(offline_msg_counter_cache, US, ejabberd_cluster:get_nodes())
    catch _:_ -> ok         % no such cache (use_cache: false)
    end.

%% When this node last lost sight of a peer (the watcher notes every mnesia_down; a partition
%% is the latest such moment when a heal asks). `always` if it noted none: then every stored
%% message is carried over, a duplicate rather than a loss.
lost_peer_since() ->
    Downs = try [At || {{down, _Node}, At} <- ets:tab2list(?WATCHER)]
            catch error:badarg -> []
            end,
    case Downs of
        [] -> always;
        _ -> lists:max(Downs)
    end.

%% In the session's own process: fetch the offline messages as mod_offline does at initial
%% presence (it routes them to the user's available sessions and deletes them).
-spec c2s_handle_info(ejabberd_c2s:state(), term()) -> ejabberd_c2s:state() | {stop, ejabberd_c2s:state()}.
c2s_handle_info(#{lserver := S, pres_last := #presence{} = Pres} = State, easy_cluster_refetch) ->
    case gen_mod:is_loaded(S, mod_offline) of
        true -> _ = mod_offline:c2s_self_presence({Pres, maps:remove(pres_last, State)});
        false -> ok
    end,
    {stop, State};
c2s_handle_info(State, easy_cluster_refetch) ->
    {stop, State};      % not available (yet): its initial presence fetches them
c2s_handle_info(State, _) ->
    State.

ensure_partition_watcher() ->
    case whereis(?WATCHER) of
        undefined -> spawn(fun partition_watcher/0), ok;
        Pid -> Pid ! subscribe, ok    % mnesia may have restarted (a join): subscribe again
    end.

partition_watcher() ->
    try register(?WATCHER, self()) of
        true ->
            ?WATCHER = ets:new(?WATCHER, [named_table, protected, set]),
            _ = mnesia:subscribe(system),
            partition_watcher_loop()
    catch error:badarg -> ok    % another one was started first
    end.

partition_watcher_loop() ->
    receive
        {mnesia_system_event, {inconsistent_database, Context, Node}} ->
            ?WARNING_MSG("easy_cluster: Mnesia reports ~p with ~p: data may differ until "
                         "`fab heal --winner NODE`", [Context, Node]),
            ets:insert(?WATCHER, {Node, Context, erlang:system_time(second)});
        {mnesia_system_event, {mnesia_down, Node}} ->
            ets:insert(?WATCHER, {{down, Node}, erlang:timestamp()});
        {mnesia_system_event, {mnesia_up, _Node}} ->
            _ = spawn(fun republish_sessions/0);
        subscribe -> _ = mnesia:subscribe(system);
        clear -> ets:delete_all_objects(?WATCHER);
        {forget, Node} -> ets:delete(?WATCHER, Node);
        _ -> ok
    end,
    partition_watcher_loop().

%% When Mnesia on a peer comes (back) up, this node's sessions are written again to every
%% replica. A peer that merely lost the connection (it did not restart) had dropped them from
%% its routing table at mnesia_down (ejabberd_sm_mnesia), and would store every message for
%% these users offline while they are online here; a peer that restarted has them already.
republish_sessions() ->
    try
        lists:foreach(fun mnesia:dirty_write/1, ejabberd_sm:dirty_get_my_sessions_list())
    catch Class:Why ->
        ?WARNING_MSG("easy_cluster: could not publish this node's sessions again: ~p:~p", [Class, Why])
    end.

%% Only members count: a node since forgotten or removed is no partition of this cluster.
partitioned_with() ->
    Members = mnesia:system_info(db_nodes),
    try lists:usort([N || {N, _Context, _At} <- ets:tab2list(?WATCHER), lists:member(N, Members)])
    catch error:badarg -> []
    end.

%% A node that joins afresh (wiped, then joined at boot) or is forgotten starts a new history:
%% what Mnesia reported about its old incarnation no longer applies. Called on every member.
partition_forget(Node) ->
    case whereis(?WATCHER) of
        undefined -> ok;
        Pid -> Pid ! {forget, Node}, ok
    end.

forget_partitions_everywhere(Node) ->
    %% (should Mnesia not run here: ask the connected nodes)
    Nodes = try mnesia:system_info(running_db_nodes) catch _:_ -> [node() | nodes()] end,
    _ = rpc:multicall(Nodes, ?MODULE, partition_forget, [Node], 5000),
    ok.

partition_clear() ->
    case whereis(?WATCHER) of
        undefined -> ok;
        Pid -> Pid ! clear
    end,
    {ok, json(#{ok => true})}.

%% Master nodes are kept in the schema: after a restart this node loads its tables from them
%% only, discarding what it wrote on its side of a partition. Cleared with "none".
set_master(NodesStr) ->
    Nodes = case NodesStr of
                "none" -> [];
                _ -> [list_to_atom(N) || N <- string:lexemes(NodesStr, ",")]
            end,
    case mnesia:set_master_nodes(Nodes) of
        ok -> {ok, json(#{ok => true, master_nodes => Nodes})};
        {error, Why} -> {?FAILED, json(#{ok => false, reason => fmt(Why)})}
    end.

%% After a full outage a node waits for the tables of the node that stopped last; when that node
%% is lost for good, load this node's own copies instead (what only the lost node had is lost).
force_load() ->
    Tables = mnesia:system_info(local_tables) -- [schema],
    Results = [{T, mnesia:force_load_table(T)} || T <- Tables],
    Failed = [T || {T, R} <- Results, R =/= yes],
    json(#{ok => Failed == [], tables => length(Tables), failed => Failed}).

%% A cluster-wide restore on a live cluster: every disc table is cleared and refilled from the
%% backup on all its replicas (one transaction per table); ram tables (sessions, routes) are
%% skipped, they describe the present, not the past.
%% mnesia:backup/1 walks a checkpoint key by key: two dets calls per record of a
%% disc_only_copies table (passwd, roster...), ~12 s for 200,000 records. This writes the same
%% file the same way (through mnesia_backup, header, schema first, then each table as a "latest"
%% pass and a "checkpoint" pass over the checkpoint's retainer), except that the latest pass of
%% a disc_only_copies table held here reads the dets file in bulk, fixed for the traversal.
%% Consistent as of the checkpoint's activation: a record changed since then is in the retainer,
%% and the retainer pass, written after, puts back (or deletes) what it was at activation.
backup(PathStr) ->
    T0 = erlang:monotonic_time(millisecond),
    Tabs = mnesia:system_info(tables),
    case mnesia:activate_checkpoint([{max, Tabs}, {ram_overrides_dump, false}]) of
        {ok, Name, _Nodes} ->
            Tmp = PathStr ++ ".partial",
            Result = try write_backup(Name, Tmp)
                     catch Class:Why -> {error, {Class, Why}}
                     after mnesia:deactivate_checkpoint(Name)
                     end,
            case Result of
                {ok, Records} ->
                    ok = file:rename(Tmp, PathStr),
                    {ok, json(#{ok => true, path => list_to_binary(PathStr), records => Records,
                                ms => erlang:monotonic_time(millisecond) - T0})};
                {error, Reason} ->
                    _ = file:delete(Tmp),
                    {?FAILED, json(#{ok => false, reason => fmt(Reason)})}
            end;
        {error, Why} -> {?FAILED, json(#{ok => false, reason => fmt({activate_checkpoint, Why})})}
    end.

write_backup(Name, Path) ->
    {ok, AllTabs, Cookie} = mnesia_checkpoint:tables_and_cookie(Name),
    {ok, B0} = mnesia_backup:open_write(Path),
    try
        {ok, B1} = mnesia_backup:write(B0, [mnesia_log:backup_log_header()]),
        SchemaFilter = fun(Recs) -> mnesia_bup:refresh_cookie(Recs, Cookie) end,
        {B2, _} = backup_table(Name, schema, SchemaFilter, {B1, 0}),
        {B3, N} = lists:foldl(fun(Tab, Acc) -> backup_table(Name, Tab, record_filter(Tab), Acc) end,
                              {B2, 0}, AllTabs -- [schema]),
        {ok, _} = mnesia_backup:commit_write(B3),
        {ok, N}
    catch Class:Why:Stack ->
        _ = mnesia_backup:abort_write(B0),
        erlang:raise(Class, Why, Stack)
    end.

record_filter(Tab) ->
    case mnesia:table_info(Tab, record_name) of
        Tab -> fun(Recs) -> Recs end;
        _ -> fun(Recs) -> [setelement(1, R, Tab) || R <- Recs] end
    end.

backup_table(Name, Tab, Filter, Acc) ->
    Write = fun(Recs, {B, N}) ->
                    {ok, B2} = mnesia_backup:write(B, Filter(Recs)),
                    {B2, N + length(Recs)}
            end,
    %% (ram_copies tables are not retained: their pass gives what mnesia:backup gives, nothing)
    Latest = case {mnesia_checkpoint:really_retain(Name, Tab),
                   Tab =/= schema andalso mnesia:table_info(Tab, storage_type) == disc_only_copies} of
                 {false, _} -> Acc;
                 {true, true} -> dets_chunks(Tab, Write, Acc);
                 {true, false} -> checkpoint_pass(Name, Tab, Write, Acc, table, latest)
             end,
    checkpoint_pass(Name, Tab, Write, Latest, retainer, checkpoint).

checkpoint_pass(Name, Tab, Write, Acc, Source, Age) ->
    Fun = fun([], A) -> A; (Recs, A) -> Write(Recs, A) end,
    {ok, Acc2} = mnesia_checkpoint:iterate(Name, Tab, Fun, Acc, Source, Age),
    Acc2.

dets_chunks(Tab, Write, Acc) ->
    ok = dets:safe_fixtable(Tab, true),
    try dets_chunks(dets:select(Tab, [{'_', [], ['$_']}], 1000), Write, Acc, Tab)
    after dets:safe_fixtable(Tab, false)
    end.

dets_chunks('$end_of_table', _Write, Acc, _Tab) -> Acc;
dets_chunks({error, Why}, _Write, _Acc, Tab) -> error({dets_select, Tab, Why});
dets_chunks({Recs, Cont}, Write, Acc, Tab) -> dets_chunks(dets:select(Cont), Write, Write(Recs, Acc), Tab).

restore(PathStr) ->
    Disc = [T || T <- mnesia:system_info(tables), T =/= schema,
                 lists:member(mnesia:table_info(T, storage_type), [disc_copies, disc_only_copies])],
    case filelib:is_regular(PathStr) of
        false -> {?FAILED, json(#{ok => false, reason => no_such_file})};
        true ->
            case mnesia:restore(PathStr, [{default_op, skip_tables}, {clear_tables, Disc}]) of
                {atomic, Restored} ->
                    {ok, json(#{ok => true, restored => Restored,
                                registered_users => safe(fun registered_users/0)})};
                {aborted, Why} -> {?FAILED, json(#{ok => false, reason => fmt(Why)})}
            end
    end.

%%%===================================================================
%%% JSON
%%%===================================================================
json(Term) ->
    binary_to_list(iolist_to_binary(jiffy:encode(jsonable(Term)))).

jsonable(M) when is_map(M) ->
    maps:from_list([{key(K), jsonable(V)} || {K, V} <- maps:to_list(M)]);
jsonable(L) when is_list(L) -> [jsonable(X) || X <- L];
jsonable(B) when is_binary(B); is_number(B); is_boolean(B); B == null -> B;
jsonable(A) when is_atom(A) -> atom_to_binary(A, utf8);
jsonable(Other) -> fmt(Other).

key(K) when is_atom(K) -> atom_to_binary(K, utf8);
key(K) when is_binary(K) -> K;
key(K) -> fmt(K).

fmt(Term) when is_binary(Term) -> Term;
fmt(Term) when is_map(Term) -> jsonable(Term);
fmt(Term) when is_atom(Term) -> atom_to_binary(Term, utf8);
fmt(Term) -> iolist_to_binary(io_lib:format("~0p", [Term])).

%%%===================================================================
%%% easy_cluster_cookie: change the Erlang cookie of a running node (fab rotate-cookie)
%%%===================================================================
%% The new cookie never travels as an argument (ps shows those): the toolkit uploads it to
%% COOKIE_STAGING (0400, ejabberd) and each phase reads it from there.
%%   peers: use the new cookie towards every cluster peer. Connections up stay up (a cookie
%%          is checked only at connection setup); run it on every node before any `self`.
%%   self:  make it this node's own cookie (what unknown nodes, e.g. ejabberdctl's, must
%%          present) and, in the same call, rename the staging file over the cookie file,
%%          so the next ejabberdctl connects with the cookie the node now expects.
%%   check: report (as sha256) the cookie this node uses for itself and for each peer.
-define(COOKIE_STAGING_NAME, ".erlang.cookie.rotate").

cookie_commands() ->
    [#ejabberd_commands{name = easy_cluster_cookie, tags = [cluster],
                        desc = "Rotate this node's Erlang cookie at runtime: peers | self | check",
                        longdesc = "The new cookie is read from $HOME/" ?COOKIE_STAGING_NAME
                                   ", never from the command line.",
                        module = ?MODULE, function = cookie,
                        args_desc = ["peers, self or check"],
                        args = [{phase, string}], result = {res, restuple}}].

cookie(Phase) ->
    Result = try cookie_phase(Phase)
             catch Class:Reason -> {error, {Class, Reason}}
             end,
    case Result of
        {ok, Info} ->
            {ok, json(Info#{ok => true, phase => list_to_binary(Phase), node => node(),
                            cookie_sha256 => cookie_sha(erlang:get_cookie())})};
        {error, Why} ->
            {?FAILED, json(#{ok => false, phase => list_to_binary(Phase), node => node(),
                             reason => fmt(Why)})}
    end.

cookie_phase("check") ->
    {ok, #{peers => maps:from_list([{P, cookie_sha(erlang:get_cookie(P))} || P <- cookie_peers()])}};
cookie_phase("peers") ->
    case read_staged_cookie() of
        {ok, New} ->
            Peers = cookie_peers(),
            _ = [erlang:set_cookie(P, New) || P <- Peers],
            {ok, #{peers => maps:from_list([{P, cookie_sha(erlang:get_cookie(P))} || P <- Peers])}};
        Err -> Err
    end;
cookie_phase("self") ->
    case read_staged_cookie() of
        {ok, New} ->
            Old = erlang:get_cookie(),
            true = erlang:set_cookie(node(), New),
            case file:rename(cookie_path(?COOKIE_STAGING_NAME), cookie_path(".erlang.cookie")) of
                ok -> {ok, #{}};
                {error, Why} ->
                    %% the file still holds the old cookie: keep the node on it too
                    true = erlang:set_cookie(node(), Old),
                    {error, {rename_cookie_file, Why}}
            end;
        Err -> Err
    end;
cookie_phase(Other) ->
    {error, {unknown_phase, list_to_binary(Other)}}.

%% Every node this node talks to as a cluster member: connected or in the schema.
cookie_peers() ->
    lists:usort(nodes() ++ mnesia:system_info(db_nodes)) -- [node()].

read_staged_cookie() ->
    case file:read_file(cookie_path(?COOKIE_STAGING_NAME)) of
        {ok, Bin} ->
            Text = string:trim(binary_to_list(Bin)),
            Valid = length(Text) >= 20 andalso
                lists:all(fun(C) -> lists:member(C, "abcdefghijklmnopqrstuvwxyz"
                                                    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_@.-") end,
                          Text),
            case Valid of
                true -> {ok, list_to_atom(Text)};
                false -> {error, staged_cookie_invalid}   % its content is never echoed
            end;
        {error, Why} -> {error, {no_staged_cookie, Why}}
    end.

cookie_path(Name) ->
    {ok, [[Home]]} = init:get_argument(home),
    filename:join(Home, Name).

cookie_sha(Cookie) ->
    list_to_binary(string:lowercase(binary_to_list(binary:encode_hex(
        crypto:hash(sha256, atom_to_list(Cookie)))))).
