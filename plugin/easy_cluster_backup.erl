%%% easy_cluster_backup: a full Mnesia backup written fast (`easy_cluster_backup`), and the
%%% cluster-wide restore of one on a live cluster (`easy_cluster_restore`).
-module(easy_cluster_backup).

-export([backup/1, restore/1]).

%% Fault injection for the toolkit's tests: while this file exists, a backup whose checkpoint is
%% active waits (at most PAUSE_MAX_MS) before it reads anything, so a test can change the
%% cluster under it.
-define(PAUSE_FILE, "/run/ejabberd/easy_cluster_backup.pause").
-define(PAUSE_MAX_MS, 60000).

%% mnesia:backup/1 walks a checkpoint key by key: two dets calls per record of a
%% disc_only_copies table (passwd, roster...), ~12 s for 200,000 records. This writes the same
%% file the same way (through mnesia_backup, header, schema first, then each table as a "latest"
%% pass and a "checkpoint" pass over the checkpoint's retainer), except that the latest pass of
%% a disc_only_copies table held here reads the dets file in bulk, fixed for the traversal.
%% Consistent as of the checkpoint's activation: a record changed since then is in the retainer,
%% and the retainer pass, written after, puts back (or deletes) what it was at activation.
%%
%% PathStr ++ ".active" exists from the moment the checkpoint is active until the backup is
%% written (or has failed): from then on the cluster may change (a join: Mnesia gives a node that
%% gets a copy of a retained table a retainer of its own), the backup holds it as it was at
%% activation.
-spec backup(string()) -> easy_cluster_json:answer().
backup(PathStr) ->
    T0 = erlang:monotonic_time(millisecond),
    Tabs = mnesia:system_info(tables),
    case mnesia:activate_checkpoint([{max, Tabs}, {ram_overrides_dump, false}]) of
        {ok, Name, _Nodes} ->
            Tmp = PathStr ++ ".partial",
            Active = PathStr ++ ".active",
            Result = try
                         ok = file:write_file(Active, <<>>),
                         write_backup(Name, Tmp, fun pause_point/0)
                     catch Class:Why -> {error, {Class, Why}}
                     after
                         _ = mnesia:deactivate_checkpoint(Name),
                         _ = file:delete(Active)
                     end,
            case Result of
                {ok, Records} ->
                    ok = file:rename(Tmp, PathStr),
                    easy_cluster_json:ok(#{ok => true, path => list_to_binary(PathStr), records => Records,
                                           ms => erlang:monotonic_time(millisecond) - T0});
                {error, Reason} ->
                    _ = file:delete(Tmp),
                    easy_cluster_json:failed(#{ok => false, reason => easy_cluster_json:fmt(Reason)})
            end;
        {error, Why} ->
            easy_cluster_json:failed(#{ok => false, reason => easy_cluster_json:fmt({activate_checkpoint, Why})})
    end.

write_backup(Name, Path, Opened) ->
    {ok, AllTabs, Cookie} = mnesia_checkpoint:tables_and_cookie(Name),
    {ok, B0} = mnesia_backup:open_write(Path),
    try
        ok = Opened(),
        {ok, B1} = mnesia_backup:write(B0, [mnesia_log:backup_log_header()]),
        {ok, B2} = mnesia_backup:write(B1, schema_at_activation(Name, Cookie)),
        {B3, N} = lists:foldl(fun(Tab, Acc) -> backup_table(Name, Tab, record_filter(Tab), Acc) end,
                              {B2, 0}, AllTabs -- [schema]),
        {ok, _} = mnesia_backup:commit_write(B3),
        {ok, N}
    catch Class:Why:Stack ->
        _ = mnesia_backup:abort_write(B0),
        erlang:raise(Class, Why, Stack)
    end.

%% The schema's entries as they were when the checkpoint was activated, each written once. A
%% table whose definition changed since (a join gave it a copy on a new node) has its old
%% definition in the retainer: the two passes would write the new one, a deletion and the old
%% one again, and mnesia:restore reads a deletion in a backup's schema as "delete this table".
%% So both passes are read into one map first (the checkpoint's values last, as they win).
schema_at_activation(Name, Cookie) ->
    Put = fun(Recs, M) -> lists:foldl(fun({schema, T}, M1) -> maps:remove(T, M1);
                                          ({schema, T, _} = R, M1) -> M1#{T => R}
                                      end, M, Recs)
          end,
    Latest = case mnesia_checkpoint:really_retain(Name, schema) of
                 true -> {ok, L} = mnesia_checkpoint:iterate(Name, schema, Put, #{}, table, latest), L;
                 false -> #{}
             end,
    {ok, Entries} = mnesia_checkpoint:iterate(Name, schema, Put, Latest, retainer, checkpoint),
    {Own, Tables} = maps:take(schema, Entries),
    mnesia_bup:refresh_cookie([Own], Cookie) ++ [R || {_, R} <- lists:sort(maps:to_list(Tables))].

-spec pause_point() -> ok.
pause_point() ->
    Deadline = erlang:monotonic_time(millisecond) + ?PAUSE_MAX_MS,
    pause_point(Deadline).

pause_point(Deadline) ->
    case filelib:is_file(?PAUSE_FILE) andalso erlang:monotonic_time(millisecond) < Deadline of
        true -> timer:sleep(100), pause_point(Deadline);
        false -> ok
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

%% A cluster-wide restore on a live cluster: every disc table is cleared and refilled from the
%% backup on all its replicas (one transaction per table); ram tables (sessions, routes) are
%% skipped, they describe the present, not the past.
-spec restore(string()) -> easy_cluster_json:answer().
restore(PathStr) ->
    Disc = [T || T <- mnesia:system_info(tables), T =/= schema,
                 lists:member(mnesia:table_info(T, storage_type), [disc_copies, disc_only_copies])],
    case filelib:is_regular(PathStr) of
        false -> easy_cluster_json:failed(#{ok => false, reason => no_such_file});
        true ->
            case mnesia:restore(PathStr, [{default_op, skip_tables}, {clear_tables, Disc}]) of
                {atomic, Restored} ->
                    easy_cluster_json:ok(#{ok => true, restored => Restored,
                                           registered_users => easy_cluster_json:safe(
                                                                 fun easy_cluster_status:registered_users/0)});
                {aborted, Why} -> easy_cluster_json:failed(#{ok => false, reason => easy_cluster_json:fmt(Why)})
            end
    end.
