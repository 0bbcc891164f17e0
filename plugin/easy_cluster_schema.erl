%%% easy_cluster_schema: changes to the cluster's Mnesia schema and to where tables load from,
%%% made by the toolkit's runbooks: forget a dead node (`easy_cluster_forget`), the heal's master
%%% nodes (`easy_cluster_set_master`), and the start after a full outage (force_load, over RPC).
%%% And what an upgrade's plan needs: each table's record as Mnesia holds it
%%% (`easy_cluster_tables`), and the records another ejabberd version's headers define
%%% (`easy_cluster_records DIR`): a replicated table whose record changes between two versions
%%% cannot be rolled (ejabberd transforms it at start, under the old nodes' feet: ejabberd #4374).
-module(easy_cluster_schema).

-export([forget/1, set_master/1, force_load/0, atomic/1]).
-export([tables/0, records/1]).

%%%===================================================================
%%% easy_cluster_forget: offline removal of a dead node
%%%===================================================================
-spec forget(string()) -> easy_cluster_json:answer().
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
                                      ok -> easy_cluster_partition:forget_everywhere(Node), {ok, forgotten};
                                      Err -> Err
                                  end;
                            Err -> Err
                        end
                end
        end,
    case Result of
        {ok, What} ->
            easy_cluster_json:ok(#{ok => true, node => Node, result => What,
                                   db_nodes => mnesia:system_info(db_nodes)});
        {error, Why} ->
            easy_cluster_json:failed(#{ok => false, node => Node, reason => easy_cluster_json:fmt(Why)})
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
%%% Runbooks: partition heal, start after outage
%%%===================================================================
%% Master nodes are kept in the schema: after a restart this node loads its tables from them
%% only, discarding what it wrote on its side of a partition. Cleared with "none".
-spec set_master(string()) -> easy_cluster_json:answer().
set_master(NodesStr) ->
    Nodes = case NodesStr of
                "none" -> [];
                _ -> [list_to_atom(N) || N <- string:lexemes(NodesStr, ",")]
            end,
    case mnesia:set_master_nodes(Nodes) of
        ok -> easy_cluster_json:ok(#{ok => true, master_nodes => Nodes});
        {error, Why} -> easy_cluster_json:failed(#{ok => false, reason => easy_cluster_json:fmt(Why)})
    end.

%% After a full outage a node waits for the tables of the node that stopped last; when that node
%% is lost for good, load this node's own copies instead (what only the lost node had is lost).
%% Called over RPC from a hidden node while ejabberd itself still waits for its tables: answers
%% the JSON itself (a string), not a restuple.
-spec force_load() -> string().
force_load() ->
    Tables = mnesia:system_info(local_tables) -- [schema],
    Results = [{T, mnesia:force_load_table(T)} || T <- Tables],
    Failed = [T || {T, R} <- Results, R =/= yes],
    easy_cluster_json:encode(#{ok => Failed == [], tables => length(Tables), failed => Failed}).

%% A schema transaction's result (local or over RPC) as ok | {error, Why}.
-spec atomic(term()) -> ok | {error, term()}.
atomic({atomic, ok}) -> ok;
atomic({aborted, Why}) -> {error, Why};
atomic({badrpc, Why}) -> {error, {badrpc, Why}};
atomic(Other) -> {error, Other}.

%%%===================================================================
%%% Upgrades: records of the running tables, and of another version's headers
%%%===================================================================
%% Every table but the schema: its record name and attributes (what a version's code must
%% agree with), its size, and the storage type of each copy.
-spec tables() -> easy_cluster_json:answer().
tables() ->
    Tables = [T || T <- mnesia:system_info(tables), T =/= schema],
    easy_cluster_json:ok(
      #{tables => maps:from_list(
                    [{T, #{record_name => mnesia:table_info(T, record_name),
                           attributes => mnesia:table_info(T, attributes),
                           size => easy_cluster_json:safe(fun() -> mnesia:table_info(T, size) end),
                           copies => maps:from_list(easy_cluster_status:where_to_commit(T))}}
                     || T <- Tables])}).

%% The records the headers (*.hrl) in Dir define, with their fields in order: an ejabberd
%% package's include directory, of the version an upgrade goes to. Headers that include
%% others from elsewhere (xmpp's) parse all the same: the records are what matters.
-spec records(string()) -> easy_cluster_json:answer().
records(Dir) ->
    case filelib:wildcard(filename:join(Dir, "*.hrl")) of
        [] ->
            easy_cluster_json:failed(#{ok => false, reason => <<"no headers (*.hrl) in ", (list_to_binary(Dir))/binary>>});
        Files ->
            Records = lists:append([file_records(F) || F <- Files]),
            easy_cluster_json:ok(#{ok => true, headers => length(Files),
                                   records => maps:from_list(Records)})
    end.

file_records(File) ->
    case epp:parse_file(File, [{includes, [filename:dirname(File)]}]) of
        {ok, Forms} -> [{R, [field_name(F) || F <- Fields]} || {attribute, _, record, {R, Fields}} <- Forms];
        {error, _} -> []
    end.

field_name({record_field, _, {atom, _, Name}}) -> Name;
field_name({record_field, _, {atom, _, Name}, _Default}) -> Name;
field_name({typed_record_field, Field, _Type}) -> field_name(Field).
