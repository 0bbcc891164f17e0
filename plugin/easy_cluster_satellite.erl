%%% easy_cluster_satellite: a satellite's start (`-s easy_cluster boot_satellite`, before
%%% ejabberd; templates/ejabberd.default.j2).
%%%
%%% A satellite keeps its Mnesia schema in RAM (`-mnesia schema_location ram`) and joins the
%%% cluster at every start through its masters (`-mnesia extra_db_nodes [...]`): it holds no
%%% disc copy of any table, only RAM tables (sessions, routes); stored data is read and written
%%% on the masters. Started while no master runs Mnesia, it would come up as a cluster of its
%%% own, empty. So before Mnesia starts it waits until one of its masters runs Mnesia, keeping
%%% the unit's start timeout pushed out (EXTEND_TIMEOUT_USEC); past WAIT_MAX_MS the VM halts
%%% with status 1 and systemd starts it again (Restart=on-failure): a satellite whose masters
%%% are all down waits for them, however long, without ever starting alone.
-module(easy_cluster_satellite).

-export([boot_satellite/0]).

-define(WAIT_MAX_MS, 300000).
-define(POLL_MS, 500).

-spec boot_satellite() -> ok.
boot_satellite() ->
    case application:get_env(mnesia, extra_db_nodes) of
        {ok, [_ | _] = Masters} ->
            Extender = spawn_link(fun easy_cluster_join:extend_start_timeout/0),
            Result = easy_cluster_join:poll_until(fun() -> lists:any(fun runs_mnesia/1, Masters) end,
                                                  erlang:monotonic_time(millisecond) + ?WAIT_MAX_MS, ?POLL_MS),
            unlink(Extender),
            exit(Extender, kill),
            case Result of
                ok -> ok;
                timeout -> erlang:halt(1)
            end;
        _ -> ok
    end.

runs_mnesia(Node) ->
    net_adm:ping(Node) == pong andalso rpc:call(Node, mnesia, system_info, [is_running], 5000) == yes.
