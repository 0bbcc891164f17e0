%%% ejabberd_cluster_easy: ejabberd's cluster backend for easycluster (`cluster_backend: easy`).
%%%
%%% Mnesia's backend (ejabberd_cluster_mnesia) for everything but one thing: a message stanza
%%% routed to a session on another node. Mnesia's backend sends it with erlang:send/3
%%% [nosuspend, noconnect] and forgets it: dropped when the link to that node is busy or not up,
%%% and lost when the link dies with it still queued. The last is what a partition does: for up
%%% to net_ticktime the cut node still counts as up, and everything routed to its sessions in
%%% that time vanished (seen in `make load`: ~370 messages in a 25 s partition).
%%%
%%% Here such a message goes through a courier, one per node: it keeps each message until the
%%% courier on the session's node confirms it has put it in the session's mailbox (or routed it
%%% again, if the session is gone). When a node goes down, what it never confirmed is routed
%%% again on this node a moment later, once ejabberd has removed that node's sessions: to the
%%% user's other sessions or to offline storage. A confirmation lost in the cut means a message
%%% delivered twice; nothing is delivered zero times. A node whose courier does not run (an
%%% older plugin, during an upgrade) gets its messages the way Mnesia's backend sends them.
-module(ejabberd_cluster_easy).
-behaviour(ejabberd_cluster).
-behaviour(gen_server).

%% ejabberd_cluster
-export([init/0, get_nodes/0, get_known_nodes/0, join/1, leave/1, node_id/0, get_node_by_id/1,
         send/2, wait_for_sync/1, subscribe/1]).
%% the courier
-export([start_link/0, child_spec/0, unconfirmed/0, stats/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2, code_change/3]).

-include("logger.hrl").

-define(COURIER, easy_cluster_courier).
%% After a node went down, its unconfirmed messages wait this long before they are routed
%% again: ejabberd removes the node's sessions on Mnesia's mnesia_down, which comes a moment
%% after the nodedown that ends the wait here.
-define(REROUTE_AFTER_MS, 1000).
%% A message routed again and again to sessions of a node that is down (its sessions not yet
%% removed) is given to ejabberd's router this many times at most.
-define(MAX_REROUTES, 10).
%% A message the link could not take at once (busy) is sent again this much later.
-define(SEND_AGAIN_MS, 200).
%% A node found without a courier is asked again after this long.
-define(PROBE_AGAIN_MS, 30000).
%% Beyond this many unconfirmed messages for one node, new ones go the plain way.
-define(MAX_UNCONFIRMED, 200000).

%% ejabberd_cluster's dst() (not exported there).
-type dst() :: pid() | atom() | {atom(), node()}.

-record(peer, {state = probing :: probing | courier | plain,
               monitor :: reference() | undefined,
               unconfirmed = #{} :: #{reference() => {pid(), term()}}}).

%%%===================================================================
%%% ejabberd_cluster: Mnesia's, except send/2
%%%===================================================================
-spec init() -> ok.
init() -> ejabberd_cluster_mnesia:init().
-spec get_nodes() -> [node()].
get_nodes() -> ejabberd_cluster_mnesia:get_nodes().
-spec get_known_nodes() -> [node()].
get_known_nodes() -> ejabberd_cluster_mnesia:get_known_nodes().
-spec join(node()) -> ok | {error, any()}.
join(Node) -> ejabberd_cluster_mnesia:join(Node).
-spec leave(node()) -> ok | {error, any()}.
leave(Node) -> ejabberd_cluster_mnesia:leave(Node).
-spec node_id() -> binary().
node_id() -> ejabberd_cluster_mnesia:node_id().
-spec get_node_by_id(binary()) -> node().
get_node_by_id(Id) -> ejabberd_cluster_mnesia:get_node_by_id(Id).
-spec wait_for_sync(timeout()) -> ok.
wait_for_sync(Timeout) -> ejabberd_cluster_mnesia:wait_for_sync(Timeout).
-spec subscribe(dst()) -> ok.
subscribe(Proc) -> ejabberd_cluster_mnesia:subscribe(Proc).

%% ejabberd_cluster:send/2 sends to local processes itself; this is called for remote ones.
-spec send(dst(), term()) -> boolean().
send(Pid, {route, Packet} = Msg) when is_pid(Pid), element(1, Packet) == message ->
    case whereis(?COURIER) of
        undefined -> plain_send(Pid, Msg);
        Courier -> gen_server:cast(Courier, {hand_over, Pid, Msg}), true
    end;
send(Dst, Msg) ->
    plain_send(Dst, Msg).

%% What Mnesia's backend does (ejabberd_cluster_mnesia:send/2 in 23.01, whose spec admits no pid,
%% though ejabberd_cluster:send/2 passes pids): sent if the link takes it at once, else dropped.
-spec plain_send(dst(), term()) -> boolean().
plain_send(Dst, Msg) ->
    erlang:send(Dst, Msg, [nosuspend, noconnect]) == ok.

%%%===================================================================
%%% The courier
%%%===================================================================
-spec child_spec() -> supervisor:child_spec().
child_spec() ->
    #{id => ?COURIER, start => {?MODULE, start_link, []}, restart => permanent,
      shutdown => 5000, type => worker, modules => [?MODULE]}.

-spec start_link() -> {ok, pid()} | ignore | {error, any()}.
start_link() ->
    gen_server:start_link({local, ?COURIER}, ?MODULE, [], []).

%% Unconfirmed messages per node (for `easy_cluster_status` and the tests).
-spec unconfirmed() -> #{node() => non_neg_integer()}.
unconfirmed() ->
    try gen_server:call(?COURIER, unconfirmed, 5000)
    catch exit:_ -> #{}
    end.

%% For the metrics: unconfirmed messages (all nodes), and how many were routed again since the
%% courier started (kept in its process dictionary: a count, not part of its state).
-spec stats() -> #{unconfirmed := non_neg_integer(), rerouted := non_neg_integer()}.
stats() ->
    try gen_server:call(?COURIER, stats, 5000)
    catch exit:_ -> #{unconfirmed => 0, rerouted => 0}
    end.

-type peers() :: #{node() => #peer{}}.

-spec init([]) -> {ok, peers()}.
init([]) ->
    {ok, #{}}.

-spec handle_call(term(), gen_server:from(), peers()) ->
          {reply, #{node() => non_neg_integer()} | #{atom() => non_neg_integer()} | {error, badarg}, peers()}.
handle_call(unconfirmed, _From, Peers) ->
    {reply, maps:map(fun(_, #peer{unconfirmed = U}) -> map_size(U) end, Peers), Peers};
handle_call(stats, _From, Peers) ->
    {reply, #{unconfirmed => lists:sum([map_size(U) || #peer{unconfirmed = U} <- maps:values(Peers)]),
              rerouted => rerouted()}, Peers};
handle_call(_Request, _From, Peers) ->
    {reply, {error, badarg}, Peers}.

-spec handle_cast(term(), peers()) -> {noreply, peers()}.
handle_cast({hand_over, Pid, Msg}, Peers) ->
    {noreply, hand_over(Pid, Msg, Peers)};
handle_cast(_Msg, Peers) ->
    {noreply, Peers}.

%% On the session's node: into the session's mailbox, or routed again if the session is gone.
-spec handle_info(term(), peers()) -> {noreply, peers()}.
handle_info({deliver, From, Ref, Pid, Msg}, Peers) ->
    case is_process_alive(Pid) of
        true -> Pid ! Msg;
        false -> reroute(Msg)
    end,
    _ = erlang:send(From, {confirmed, node(), Ref}, [noconnect]),
    {noreply, Peers};
handle_info({confirmed, Node, Ref}, Peers) ->
    case Peers of
        #{Node := #peer{unconfirmed = U} = P} ->
            {noreply, Peers#{Node => P#peer{state = courier, unconfirmed = maps:remove(Ref, U)}}};
        _ -> {noreply, Peers}
    end;
handle_info({'DOWN', MRef, process, {?COURIER, Node}, Reason}, Peers) ->
    case Peers of
        #{Node := #peer{monitor = MRef, unconfirmed = U}} when Reason == noproc ->
            %% that node runs no courier: what waits for it goes the plain way, and so does
            %% everything until the node goes down or this courier restarts
            [plain_send(Pid, Msg) || {Pid, Msg} <- maps:values(U)],
            erlang:send_after(?PROBE_AGAIN_MS, self(), {probe_again, Node}),
            {noreply, Peers#{Node => #peer{state = plain}}};
        #{Node := #peer{monitor = MRef, unconfirmed = U}} ->
            %% the node is down (or cut off and now counted as down)
            Waiting = maps:values(U),
            Waiting /= [] andalso ?INFO_MSG("easy_cluster: ~p went down (~p) with ~B messages unconfirmed: "
                                            "routing them again", [Node, Reason, length(Waiting)]),
            erlang:send_after(?REROUTE_AFTER_MS, self(), {reroute, Waiting}),
            {noreply, maps:remove(Node, Peers)};
        _ -> {noreply, Peers}
    end;
handle_info({reroute, Waiting}, Peers) ->
    lists:foreach(fun({_Pid, Msg}) -> reroute(Msg) end, Waiting),
    {noreply, Peers};
handle_info({send_again, Node, Ref}, Peers) ->
    case Peers of
        #{Node := #peer{unconfirmed = #{Ref := {Pid, Msg}}}} -> {noreply, send_to(Node, Ref, Pid, Msg, Peers)};
        _ -> {noreply, Peers}
    end;
handle_info({probe_again, Node}, Peers) ->
    case Peers of
        #{Node := #peer{state = plain}} -> {noreply, maps:remove(Node, Peers)};
        _ -> {noreply, Peers}
    end;
handle_info(_Info, Peers) ->
    {noreply, Peers}.

-spec terminate(term(), peers()) -> ok.
terminate(_Reason, Peers) ->
    %% not confirmed yet: sent the plain way (the courier is restarted by its supervisor)
    [plain_send(Pid, Msg) || #peer{unconfirmed = U} <- maps:values(Peers),
                                               {Pid, Msg} <- maps:values(U)],
    ok.

-spec code_change(term(), peers(), term()) -> {ok, peers()}.
code_change(_OldVsn, Peers, _Extra) ->
    {ok, Peers}.

hand_over(Pid, Msg, Peers) ->
    Node = node(Pid),
    case maps:get(Node, Peers, #peer{}) of
        #peer{state = plain} ->
            plain_send(Pid, Msg),
            Peers;
        #peer{unconfirmed = U} when map_size(U) >= ?MAX_UNCONFIRMED ->
            plain_send(Pid, Msg),
            Peers;
        P ->
            send_to(Node, make_ref(), Pid, Msg, Peers#{Node => watched(Node, P)})
    end.

%% The message is kept (unconfirmed) whether or not it could be sent now: sent again shortly if
%% the link was busy; routed again if the node is not connected, or goes down before it confirms.
send_to(Node, Ref, Pid, Msg, Peers) ->
    #peer{unconfirmed = U} = P = maps:get(Node, Peers),
    case erlang:send({?COURIER, Node}, {deliver, self(), Ref, Pid, Msg}, [noconnect, nosuspend]) of
        noconnect ->
            erlang:send_after(?REROUTE_AFTER_MS, self(), {reroute, [{Pid, Msg}]}),
            Peers#{Node => P#peer{unconfirmed = maps:remove(Ref, U)}};
        nosuspend ->
            erlang:send_after(?SEND_AGAIN_MS, self(), {send_again, Node, Ref}),
            Peers#{Node => P#peer{unconfirmed = U#{Ref => {Pid, Msg}}}};
        ok ->
            Peers#{Node => P#peer{unconfirmed = U#{Ref => {Pid, Msg}}}}
    end.

%% A monitor on the node's courier: 'DOWN' noproc if it runs none, noconnection when the node
%% goes down (at once for a dead node, after net_ticktime for a cut-off one).
watched(Node, #peer{monitor = undefined} = P) ->
    P#peer{monitor = erlang:monitor(process, {?COURIER, Node})};
watched(_Node, P) ->
    P.

rerouted() ->
    case get(easy_cluster_rerouted) of
        undefined -> 0;
        N -> N
    end.

%% Given to ejabberd's router again: the user's sessions as they are now, or offline storage.
reroute({route, Packet}) ->
    put(easy_cluster_rerouted, rerouted() + 1),
    case xmpp:get_meta(Packet, easy_cluster_reroutes, 0) of
        Tries when Tries < ?MAX_REROUTES ->
            ejabberd_router:route(xmpp:put_meta(Packet, easy_cluster_reroutes, Tries + 1));
        Tries ->
            ?WARNING_MSG("easy_cluster: giving up on a message routed ~B times to sessions of nodes "
                         "that are down: ~ts", [Tries, xmpp:pp(Packet)])
    end.
