%%% easy_cluster_delivery: hooks that close races in which ejabberd 23.01 loses a message around
%%% a session that starts while other nodes route to it (registered by the easy_cluster module:
%%% mod_offline stores at 50 in offline_message_hook and delivers at 50 in c2s_self_presence).
-module(easy_cluster_delivery).

%% Hooks.
-export([publish_presence/1, offline_recheck/1, c2s_handle_info/2]).
%% For the heal's import of offline messages (easy_cluster_offline).
-export([refetch/2]).

-include("logger.hrl").
-include("xmpp.hrl").     % erlang-p1-xmpp (the toolkit passes its include directory)

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
