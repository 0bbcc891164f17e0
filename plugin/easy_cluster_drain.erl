%%% easy_cluster_drain: a node's sessions out of routing, then ended, before the node stops
%%% (`ejabberdctl easy_cluster_drain SECONDS`).
-module(easy_cluster_drain).

-export([drain/1]).

%% A drained session is out of routing this long before it is ended: messages other nodes
%% routed to it just before are delivered on the open stream, not to a closing one.
-define(DRAIN_GRACE_MS, 1000).

%% Before a node stops. (1) No new client connections here. (2) Every local session leaves the
%% routing table on every node at once (a synchronous delete): from then on the cluster routes a
%% message for these users to their other sessions or to offline storage, never to a session
%% that is about to end. (3) A grace period lets messages routed just before arrive on the still
%% open streams, where they are delivered. (4) Each session is stopped the orderly way: stream
%% management hands its unacknowledged messages back to the router, the session hands back
%% what is still queued for it, and the client gets its closing stream tag. Ending a stream
%% while it is still in the routing table (what ejabberd_c2s:close/1 does) loses what other
%% nodes route to it in between: ejabberd writes those to the closed socket.
-spec drain(integer()) -> easy_cluster_json:answer().
drain(Seconds) ->
    ok = ejabberd_listener:stop_listeners(),
    Sessions = ejabberd_sm:dirty_get_my_sessions_list(),
    SIDs = [element(2, S) || S <- Sessions],
    ok = unpublish(SIDs),
    %% (no session, nothing in flight to one: no wait, the node's clients are not kept out longer)
    SIDs =:= [] orelse timer:sleep(?DRAIN_GRACE_MS),
    Pids = [Pid || {_, Pid} <- SIDs],
    lists:foreach(fun(Pid) -> ejabberd_c2s:stop_async(Pid) end, Pids),
    Left = wait_gone(Pids, erlang:monotonic_time(millisecond) + Seconds * 1000),
    easy_cluster_json:ok(#{ok => true, closed => length(Pids), left => Left}).

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
