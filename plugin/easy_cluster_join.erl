%%% easy_cluster_join: the multi-master join, run by init during a node's start, before ejabberd
%%% starts (`-s easy_cluster boot_join` ahead of `-s ejabberd`, written by the toolkit for that
%%% one start).
%%%
%%% It follows what ejabberd's own join_cluster does (23.01), but checks the result of every
%%% step, copies every table (also for the 3rd, 4th... master), waits for the tables with a
%%% bound, and rolls back what it did when a step fails. It is the only join: nothing here ever
%%% stops the ejabberd application inside a running VM, which under systemd (Type=notify) sends
%%% STOPPING=1 and leaves the unit deactivating until systemd kills the node. A running node
%%% joins by being stopped through its unit and started again with the join.
-module(easy_cluster_join).

-export([boot_join/0]).
%% for the other waits before ejabberd starts (easy_cluster_upgrade, easy_cluster_satellite)
-export([extend_start_timeout/0, start_permanent/1, poll_until/3]).

-include("logger.hrl").

%% How long a boot join waits at most for the copied tables to load.
-define(JOIN_WAIT_SECONDS, 600).
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
%% A table that takes longer than this to copy gets a progress line this often.
-define(COPY_TICK_MS, 1000).

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
-spec boot_join() -> ok.
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
    %% The join's own code first (Mnesia's, dets'): loaded on first use, each of its modules
    %% would wait behind the code server while it loads ejabberd's for prepare_start below
    %% (add-master at 10,000 users: the tables' copy 0.93 s with the two side by side, 0.48 s
    %% alone)
    _ = load_join_code(),
    %% ejabberd's code and its translation cache, made ready beside the wait for the turn and
    %% the join (ejabberd's start needs them, not the join): done before the wait, they were
    %% the critical path of a join that gets its turn at once (add-master: ~1 s)
    Prepare = spawn_monitor(fun prepare_start/0),
    T0 = erlang:monotonic_time(millisecond),
    _ = poll_until(fun() -> filelib:is_file(?GO_FILE) end, T0 + ?GO_MAX_MS, 20),   % wait_for_turn checks
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
        ok -> await_prepared(Prepare);
        _ -> timer:sleep(100), erlang:halt(?JOIN_FAILED_EXIT)    % the log lines reach the disc first
    end.

%% Under systemd: keep pushing the unit's start timeout out while the join runs (see
%% EXTEND_EVERY_MS). Without NOTIFY_SOCKET (not started by systemd) there is nothing to do.
-spec extend_start_timeout() -> ok.
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

-spec load_join_code() -> ok | {error, term()}.
load_join_code() ->
    {ok, Mnesia} = application:get_key(mnesia, modules),
    code:ensure_modules_loaded(Mnesia ++ [dets, dets_server, dets_sup, dets_utils, dets_v9, file_sorter,
                                          disk_log, disk_log_1, disk_log_server, disk_log_sup]).

-spec prepare_start() -> ok.
prepare_start() ->
    {ok, Modules} = application:get_key(ejabberd, modules),
    _ = code:ensure_modules_loaded(Modules),
    _ = build_translation_cache(),
    ok.

%% ejabberd starts once boot_join returns: not while the cache file is being written.
-spec await_prepared({pid(), reference()}) -> ok.
await_prepared({Pid, Ref}) ->
    receive {'DOWN', Ref, process, Pid, _} -> ok
    after 60000 -> exit(Pid, kill), ok
    end.

%% ejabberd's first start on a node builds a cache of every translation in the Mnesia directory
%% (~1 s of CPU; later starts read it). Build it now, while the node waits for its turn, with
%% the translate server's own init (it needs the xmpp application, which ejabberd would start
%% anyway), in a process of its own: the table it makes goes with it, the file stays.
%% Best effort: ejabberd builds the cache itself if there is none.
build_translation_cache() ->
    try
        {ok, _} = application:ensure_all_started(xmpp),
        {Pid, Ref} = spawn_monitor(fun() -> _ = translate:init([]) end),
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

run_steps(Seed, [], Done, _Undo) ->
    ?INFO_MSG("easy_cluster: joined ~p as a master", [Seed]),
    easy_cluster_partition:forget_everywhere(node()),
    easy_cluster_json:ok(#{ok => true, seed => Seed, steps => lists:reverse(Done)});
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
            run_steps(Seed, Rest, [#{step => Name, ms => Ms, info => easy_cluster_json:fmt(Info)} | Done], Undo1);
        {error, Why} ->
            ?ERROR_MSG("easy_cluster: join of ~p failed at ~p: ~p", [Seed, Name, Why]),
            {RolledBack, UndoNotes} = roll_back(Seed, Undo),
            easy_cluster_json:failed(#{ok => false, seed => Seed, failed_step => Name,
                                       reason => easy_cluster_json:fmt(Why),
                                       steps => lists:reverse([#{step => Name, ms => Ms} | Done]),
                                       rolled_back => RolledBack, rollback => UndoNotes})
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
note(Action, {error, Why}) -> #{action => Action, ok => false, reason => easy_cluster_json:fmt(Why)}.

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
    Mine = {easy_cluster_status:ejabberd_version(), erlang:system_info(otp_release)},
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
                true -> easy_cluster_schema:atomic(rpc:call(Seed, mnesia, del_table_copy, [schema, node()], 30000));
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
            %% linked, so it goes with the join; it never fails (a progress line is not worth one)
            Ticker = spawn_link(fun() -> try copy_ticker(Seed, T, Type, T0) catch _:_ -> ok end end),
            Copied = mnesia:add_table_copy(T, node(), Type),
            unlink(Ticker),
            exit(Ticker, kill),
            case Copied of
                {atomic, ok} ->
                    progress("table ~s ~s ~B ~B", [T, Type, mnesia:table_info(T, size),
                                                   erlang:monotonic_time(millisecond) - T0]),
                    copy_tables(Seed, Rest, N + 1);
                {aborted, {already_exists, T, _}} -> copy_tables(Seed, Rest, N + 1);
                {aborted, Why} -> {error, {add_table_copy, T, Type, Why}}
            end;
        {error, Why} -> {error, {storage_type, T, Why}}
    end.

%% While a table copies, a line every COPY_TICK_MS: "copying Table Type Done Total Unit Ms Stage".
%% A disc_only copy is counted in bytes received over the distribution since the copy began,
%% against the seed's file (Unit "received"; the file mnesia builds, <Table>.TMP, is laid out at
%% full size at once and its dets server is too busy to answer). Where the distribution is not
%% plain TCP (TLS: no port to ask) the bytes this VM has written stand in (Unit "written": dets
%% writes each byte several times, so no share of a total is shown). Stage is "receiving" until
%% that file has been renamed into place, then "indexing" (a table with indexes has them built
%% from the copy, a pass over every record) or "closing". Any other copy is counted in records
%% (the ets table being filled, against the seed's size).
-spec copy_ticker(node(), atom(), atom(), integer()) -> no_return().
copy_ticker(Seed, T, disc_only_copies, T0) ->
    {Unit, Count} = case received() of
                        {ok, _} -> {received, fun() -> {ok, N} = received(), N end};
                        error -> {written, fun written/0}
                    end,
    C0 = Count(),
    %% the seed is asked only for a table still copying after a tick (most are copied sooner)
    timer:sleep(?COPY_TICK_MS),
    Total = count_or_zero(rpc:call(Seed, dets, info, [T, file_size], 10000)),
    Tmp = filename:join(mnesia:system_info(directory), atom_to_list(T) ++ ".TMP"),
    After = case mnesia:table_info(T, index) of [] -> closing; _ -> indexing end,
    copy_ticker(T, disc_only_copies, T0, Unit, Total, fun() -> Count() - C0 end,
                fun(Seen) -> case {filelib:is_file(Tmp), Seen} of
                                 {true, _} -> {receiving, true};
                                 {false, true} -> {After, true};
                                 {false, false} -> {receiving, false}
                             end
                end, false);
copy_ticker(Seed, T, Type, T0) ->
    timer:sleep(?COPY_TICK_MS),
    Total = count_or_zero(rpc:call(Seed, mnesia, table_info, [T, size], 10000)),
    copy_ticker(T, Type, T0, records, Total,
                fun() -> count_or_zero(ets:info(T, size)) end,
                fun(Seen) -> {receiving, Seen} end, false).

copy_ticker(T, Type, T0, Unit, Total, Done, Stage, Seen) ->
    {Now, Seen1} = Stage(Seen),
    progress("copying ~s ~s ~B ~B ~s ~B ~s", [T, Type, Done(), Total, Unit, erlang:monotonic_time(millisecond) - T0, Now]),
    timer:sleep(?COPY_TICK_MS),
    copy_ticker(T, Type, T0, Unit, Total, Done, Stage, Seen1).

%% A size or count as answered, or 0 for anything else (a failed rpc, no such table yet).
count_or_zero(N) when is_integer(N) -> N;
count_or_zero(_) -> 0.

%% Bytes received over every distribution connection that is a TCP port; error if one is not.
-spec received() -> {ok, non_neg_integer()} | error.
received() ->
    Stats = [case is_port(Ctrl) andalso inet:getstat(Ctrl, [recv_oct]) of
                 {ok, [{recv_oct, N}]} -> N;
                 _ -> error
             end || {_Node, Ctrl} <- erlang:system_info(dist_ctrl)],
    case lists:member(error, Stats) of
        true -> error;
        false -> {ok, lists:sum(Stats)}
    end.

%% Bytes this VM has written (write calls, /proc/self/io's wchar); 0 where there is no /proc.
-spec written() -> non_neg_integer().
written() ->
    case file:read_file("/proc/self/io") of
        {ok, Io} ->
            case re:run(Io, <<"wchar: (\\d+)">>, [{capture, all_but_first, binary}]) of
                {match, [N]} -> binary_to_integer(N);
                nomatch -> 0
            end;
        {error, _} -> 0
    end.

storage_type_on(Seed, T) ->
    case rpc:call(Seed, mnesia, table_info, [T, storage_type], 10000) of
        Type when Type == ram_copies; Type == disc_copies; Type == disc_only_copies ->
            {ok, Type};
        unknown ->
            case [Ty || {_N, Ty} <- easy_cluster_status:where_to_commit(T)] of
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

%% Ready() every PollMs until it holds (ok) or the monotonic Deadline (ms) passes (timeout).
-spec poll_until(fun(() -> boolean()), integer(), pos_integer()) -> ok | timeout.
poll_until(Ready, Deadline, PollMs) ->
    case Ready() of
        true -> ok;
        false ->
            case erlang:monotonic_time(millisecond) < Deadline of
                true -> timer:sleep(PollMs), poll_until(Ready, Deadline, PollMs);
                false -> timeout
            end
    end.

-spec start_permanent(atom()) -> ok | {error, term()}.
start_permanent(App) ->
    case application:start(App, permanent) of
        ok -> ok;
        {error, {already_started, App}} -> ok;
        {error, Why} -> {error, Why}
    end.


