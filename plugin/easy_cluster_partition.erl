%%% easy_cluster_partition: the partition watcher, one per node, supervised (a child of
%%% ejabberd_gen_mod_sup, started and stopped by the easy_cluster module).
%%%
%%% Remembers the partitions Mnesia reported since this node started: once the link is back the
%%% nodes see each other running again, but their data may have diverged until a heal
%%% (`easy_cluster_status`: partitioned_with). Notes when each peer was last lost (the heal's
%%% carry-over of offline messages starts there), and when Mnesia on a peer comes (back) up,
%%% writes this node's sessions again.
%%%
%%% What it noted is in a named ETS table of its own (protected: read by any process, written
%%% by the watcher only); a restarted watcher starts with an empty one.
-module(easy_cluster_partition).
-behaviour(gen_server).

%% the watcher under its supervisor
-export([child_spec/0, start_link/0, resubscribe/0]).
%% what it noted
-export([partitioned_with/0, lost_peer_since/0, clear/0, forget/1, forget_everywhere/1]).
%% gen_server
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2, code_change/3]).

-include("logger.hrl").

%% The watcher's registered name, and its table's.
-define(WATCHER, easy_cluster_partitions).

%%%===================================================================
%%% The watcher under its supervisor
%%%===================================================================
-spec child_spec() -> supervisor:child_spec().
child_spec() ->
    #{id => ?WATCHER, start => {?MODULE, start_link, []}, restart => permanent,
      shutdown => 5000, type => worker, modules => [?MODULE]}.

-spec start_link() -> {ok, pid()} | ignore | {error, term()}.
start_link() ->
    gen_server:start_link({local, ?WATCHER}, ?MODULE, [], []).

%% Subscribe to Mnesia's system events again: Mnesia may have restarted since the watcher did.
-spec resubscribe() -> ok.
resubscribe() ->
    gen_server:cast(?WATCHER, subscribe).

%%%===================================================================
%%% What it noted
%%%===================================================================
%% The members Mnesia reported a partition with. Only members count: a node since forgotten or
%% removed is no partition of this cluster.
-spec partitioned_with() -> [node()].
partitioned_with() ->
    Members = mnesia:system_info(db_nodes),
    try lists:usort([N || {N, _Context, _At} <- ets:tab2list(?WATCHER), lists:member(N, Members)])
    catch error:badarg -> []
    end.

%% When this node last lost sight of a peer (the watcher notes every mnesia_down; a partition
%% is the latest such moment when a heal asks). `always` if it noted none: then every stored
%% message is carried over, a duplicate rather than a loss.
-spec lost_peer_since() -> always | erlang:timestamp().
lost_peer_since() ->
    Downs = try [At || {{down, _Node}, At} <- ets:tab2list(?WATCHER)]
            catch error:badarg -> []
            end,
    case Downs of
        [] -> always;
        _ -> lists:max(Downs)
    end.

%% Forget the partitions Mnesia reported (after a heal).
-spec clear() -> ok.
clear() ->
    tell(clear).

%% A node that joins afresh (wiped, then joined at boot) or is forgotten starts a new history:
%% what Mnesia reported about its old incarnation no longer applies. Called on every member.
-spec forget(node()) -> ok.
forget(Node) ->
    tell({forget, Node}).

%% forget/1 on every running member, as easy_cluster:partition_forget/1 (the name every version
%% of the plugin answers to).
-spec forget_everywhere(node()) -> ok.
forget_everywhere(Node) ->
    %% (should Mnesia not run here: ask the connected nodes)
    Nodes = try mnesia:system_info(running_db_nodes) catch _:_ -> [node() | nodes()] end,
    _ = rpc:multicall(Nodes, easy_cluster, partition_forget, [Node], 5000),
    ok.

%% Not running (the module is not loaded here): nothing to tell.
tell(Msg) ->
    case whereis(?WATCHER) of
        undefined -> ok;
        Pid -> gen_server:cast(Pid, Msg)
    end.

%%%===================================================================
%%% gen_server
%%%===================================================================
-spec init([]) -> {ok, ets:tid() | atom()}.
init([]) ->
    Table = ets:new(?WATCHER, [named_table, protected, set]),
    subscribe(),
    {ok, Table}.

-spec handle_call(term(), gen_server:from(), T) -> {reply, {error, badarg}, T}.
handle_call(_Request, _From, Table) ->
    {reply, {error, badarg}, Table}.

-spec handle_cast(term(), T) -> {noreply, T}.
handle_cast(subscribe, Table) ->
    subscribe(),
    {noreply, Table};
handle_cast(clear, Table) ->
    true = ets:delete_all_objects(?WATCHER),
    {noreply, Table};
handle_cast({forget, Node}, Table) ->
    true = ets:delete(?WATCHER, Node),
    {noreply, Table};
handle_cast(_Msg, Table) ->
    {noreply, Table}.

-spec handle_info(term(), T) -> {noreply, T}.
handle_info({mnesia_system_event, {inconsistent_database, Context, Node}}, Table) ->
    ?WARNING_MSG("easy_cluster: Mnesia reports ~p with ~p: data may differ until "
                 "`fab heal --winner NODE`", [Context, Node]),
    true = ets:insert(?WATCHER, {Node, Context, erlang:system_time(second)}),
    {noreply, Table};
handle_info({mnesia_system_event, {mnesia_down, Node}}, Table) ->
    true = ets:insert(?WATCHER, {{down, Node}, erlang:timestamp()}),
    {noreply, Table};
handle_info({mnesia_system_event, {mnesia_up, _Node}}, Table) ->
    _ = spawn(fun republish_sessions/0),
    {noreply, Table};
handle_info(_Info, Table) ->
    {noreply, Table}.

-spec terminate(term(), term()) -> ok.
terminate(_Reason, _Table) ->
    ok.

-spec code_change(term(), T, term()) -> {ok, T}.
code_change(_OldVsn, Table, _Extra) ->
    {ok, Table}.

subscribe() ->
    _ = mnesia:subscribe(system),
    ok.

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
