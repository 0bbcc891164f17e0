%%% easy_cluster_stop: what a node does on SIGTERM, the signal easycluster's ExecStop sends (the
%%% unit's drop-in): ejabberd's orderly stop, then Mnesia's, then the VM halts.
%%%
%%% OTP's own SIGTERM handler (erl_signal_handler) calls init:stop/0, which stops every
%%% application the same way and then unloads all code before it halts: ~1 s on OTP 25 and 27,
%%% measured on the lab (an empty VM: `erl -eval "init:stop()"` 1.3 s, `-eval "halt()"` 0.26 s).
%%% That second is part of a restarting node's outage and buys nothing: the applications after
%%% Mnesia keep no data. Installed in place of erl_signal_handler while the plugin runs (start/2),
%%% put back by stop/1. SIGUSR1 and SIGQUIT do what OTP's handler does.
-module(easy_cluster_stop).
-behaviour(gen_event).

-export([install/0, uninstall/0, halt_orderly/0]).
-export([init/1, handle_event/2, handle_call/2, handle_info/2, terminate/2, code_change/3]).

-include("logger.hrl").

-define(SERVER, erl_signal_server).

-spec install() -> ok | {error, term()}.
install() ->
    swap(erl_signal_handler, ?MODULE).

-spec uninstall() -> ok | {error, term()}.
uninstall() ->
    swap(?MODULE, erl_signal_handler).

swap(From, To) ->
    Handlers = gen_event:which_handlers(?SERVER),
    case {lists:member(From, Handlers), lists:member(To, Handlers)} of
        {_, true} -> ok;
        {true, false} -> gen_event:swap_handler(?SERVER, {From, []}, {To, []});
        {false, false} -> gen_event:add_handler(?SERVER, To, [])
    end.

%% ejabberd first (its listeners, sessions and modules, as init:stop/0 would stop it), then
%% Mnesia (its log dumped, its files closed), then the VM, its ports flushed. Mnesia's stop is
%% logged, and the log files synced, before the halt (tests/test_failover.py reads the line).
-spec halt_orderly() -> no_return().
halt_orderly() ->
    _ = application:stop(ejabberd),
    Mnesia = application:stop(mnesia),
    ?INFO_MSG("Mnesia stopped (~p): the VM halts", [Mnesia]),
    _ = [catch logger_std_h:filesync(Id) || #{id := Id, module := logger_std_h} <- logger:get_handler_config()],
    erlang:halt(0).

%%%===================================================================
%%% gen_event
%%%===================================================================
-spec init(term()) -> {ok, []}.
init(_) ->
    {ok, []}.

-spec handle_event(term(), []) -> {ok, []}.
handle_event(sigterm, S) ->
    ?INFO_MSG("SIGTERM received: ejabberd and Mnesia stop, then the VM halts (easy_cluster_stop)", []),
    %% not in this process: stopping ejabberd stops the plugin, which swaps this handler out
    _ = spawn(fun halt_orderly/0),
    {ok, S};
handle_event(sigusr1, S) ->
    erlang:halt("Received SIGUSR1"),
    {ok, S};
handle_event(sigquit, S) ->
    erlang:halt(),
    {ok, S};
handle_event(_, S) ->
    {ok, S}.

-spec handle_call(term(), []) -> {ok, ok, []}.
handle_call(_, S) ->
    {ok, ok, S}.

-spec handle_info(term(), []) -> {ok, []}.
handle_info(_, S) ->
    {ok, S}.

-spec terminate(term(), []) -> ok.
terminate(_, _) ->
    ok.

-spec code_change(term(), [], term()) -> {ok, []}.
code_change(_, S, _) ->
    {ok, S}.
