%%% easy_cluster_upgrade: the hold at boot of a planned full-stop upgrade (`fab upgrade`).
%%%
%%% When a replicated table's record changes between two ejabberd versions, the new version
%%% transforms the table at start (ejabberd_mnesia), and Mnesia transforms a table only with
%%% every disc copy active (else {not_active, ...}). Started one after another, the first node
%%% to start finds the others' copies not loaded yet and its module fails; started together,
%%% two nodes may transform the same table, the second one over records already transformed.
%%% So after a full stop each node starts held, before ejabberd (init's -s, as the boot join):
%%%   `-easy_cluster_hold all`   (one node, the one that stopped last): Mnesia is started and
%%%       the node waits until every table is loaded on every node holding a copy; then
%%%       ejabberd starts here and transforms what changed, alone.
%%%   `-easy_cluster_hold NODE`  (the others): Mnesia is started (its copies load from NODE)
%%%       and the node waits until ejabberd runs on NODE, its tables transformed; then
%%%       ejabberd starts here, on tables that need nothing more.
%%% The toolkit writes the hold for that start only (templates/ejabberd.default.j2). The wait
%%% keeps pushing the unit's start timeout out (EXTEND_TIMEOUT_USEC) and is bounded: past
%%% HOLD_MAX_MS the node goes on and starts as it would have without the hold.
-module(easy_cluster_upgrade).

-export([boot_hold/0]).

-include("logger.hrl").

-define(HOLD_MAX_MS, 240000).
-define(POLL_MS, 200).

-spec boot_hold() -> ok.
boot_hold() ->
    case init:get_argument(easy_cluster_hold) of
        {ok, [[What]]} ->
            Extender = spawn_link(fun easy_cluster_join:extend_start_timeout/0),
            Deadline = erlang:monotonic_time(millisecond) + ?HOLD_MAX_MS,
            Result = hold(What, Deadline),
            unlink(Extender),
            exit(Extender, kill),
            ?INFO_MSG("easy_cluster: upgrade hold (~s): ~p", [What, Result]),
            ok;
        _ -> ok
    end.

-spec hold(string(), integer()) -> released | timeout | {error, term()}.
hold(What, Deadline) ->
    case easy_cluster_join:start_permanent(mnesia) of
        ok ->
            _ = mnesia:wait_for_tables(mnesia:system_info(local_tables), ?HOLD_MAX_MS),
            Ready = case What of
                        "all" -> fun all_copies_active/0;
                        Node -> fun() -> ejabberd_runs(list_to_atom(Node)) end
                    end,
            case easy_cluster_join:poll_until(Ready, Deadline, ?POLL_MS) of
                ok -> released;
                timeout -> timeout
            end;
        {error, Why} -> {error, Why}
    end.

%% Every table is loaded on every node that holds a copy of it (a local_content table's
%% copies are each node's own: only the local one counts as active here).
all_copies_active() ->
    lists:all(fun(T) ->
                      Copies = lists:usort(mnesia:table_info(T, disc_copies)
                                           ++ mnesia:table_info(T, disc_only_copies)
                                           ++ mnesia:table_info(T, ram_copies)),
                      mnesia:table_info(T, local_content)
                          orelse Copies -- mnesia:table_info(T, active_replicas) == []
              end, mnesia:system_info(tables)).

%% ejabberd has started on Node (its tables transformed by then): the application is listed
%% once its start has returned.
ejabberd_runs(Node) ->
    case rpc:call(Node, application, which_applications, [], 10000) of
        Apps when is_list(Apps) -> lists:keymember(ejabberd, 1, Apps);
        _ -> false
    end.
