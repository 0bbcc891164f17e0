%%% easy_cluster_cookie: change the Erlang cookie of a running node (fab rotate-cookie), as
%%% `ejabberdctl easy_cluster_cookie peers | self | check`.
-module(easy_cluster_cookie).

-export([cookie/1, staging_name/0]).

%% The new cookie never travels as an argument (ps shows those): the toolkit uploads it to
%% COOKIE_STAGING (0400, ejabberd) and each phase reads it from there.
%%   peers: use the new cookie towards every cluster peer. Connections up stay up (a cookie
%%          is checked only at connection setup); run it on every node before any `self`.
%%   self:  make it this node's own cookie (what unknown nodes, e.g. ejabberdctl's, must
%%          present) and, in the same call, rename the staging file over the cookie file,
%%          so the next ejabberdctl connects with the cookie the node now expects.
%%   check: report (as sha256) the cookie this node uses for itself and for each peer.
-define(COOKIE_STAGING_NAME, ".erlang.cookie.rotate").

%% Where the toolkit stages the new cookie, in the node's home directory.
-spec staging_name() -> string().
staging_name() ->
    ?COOKIE_STAGING_NAME.

-spec cookie(string()) -> easy_cluster_json:answer().
cookie(Phase) ->
    Result = try cookie_phase(Phase)
             catch Class:Reason -> {error, {Class, Reason}}
             end,
    case Result of
        {ok, Info} ->
            easy_cluster_json:ok(Info#{ok => true, phase => list_to_binary(Phase), node => node(),
                                       cookie_sha256 => cookie_sha(erlang:get_cookie())});
        {error, Why} ->
            easy_cluster_json:failed(#{ok => false, phase => list_to_binary(Phase), node => node(),
                                       reason => easy_cluster_json:fmt(Why)})
    end.

cookie_phase("check") ->
    {ok, #{peers => maps:from_list([{P, cookie_sha(erlang:get_cookie(P))} || P <- cookie_peers()])}};
cookie_phase("peers") ->
    case read_staged_cookie() of
        {ok, New} ->
            Peers = cookie_peers(),
            _ = [erlang:set_cookie(P, New) || P <- Peers],
            {ok, #{peers => maps:from_list([{P, cookie_sha(erlang:get_cookie(P))} || P <- Peers])}};
        Err -> Err
    end;
cookie_phase("self") ->
    case read_staged_cookie() of
        {ok, New} ->
            Old = erlang:get_cookie(),
            true = erlang:set_cookie(node(), New),
            case file:rename(cookie_path(?COOKIE_STAGING_NAME), cookie_path(".erlang.cookie")) of
                ok -> {ok, #{}};
                {error, Why} ->
                    %% the file still holds the old cookie: keep the node on it too
                    true = erlang:set_cookie(node(), Old),
                    {error, {rename_cookie_file, Why}}
            end;
        Err -> Err
    end;
cookie_phase(Other) ->
    {error, {unknown_phase, list_to_binary(Other)}}.

%% Every node this node talks to as a cluster member: connected or in the schema.
cookie_peers() ->
    lists:usort(nodes() ++ mnesia:system_info(db_nodes)) -- [node()].

read_staged_cookie() ->
    case file:read_file(cookie_path(?COOKIE_STAGING_NAME)) of
        {ok, Bin} ->
            Text = string:trim(binary_to_list(Bin)),
            Valid = length(Text) >= 20 andalso
                lists:all(fun(C) -> lists:member(C, "abcdefghijklmnopqrstuvwxyz"
                                                    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_@.-") end,
                          Text),
            case Valid of
                true -> {ok, list_to_atom(Text)};
                false -> {error, staged_cookie_invalid}   % its content is never echoed
            end;
        {error, Why} -> {error, {no_staged_cookie, Why}}
    end.

cookie_path(Name) ->
    {ok, [[Home]]} = init:get_argument(home),
    filename:join(Home, Name).

cookie_sha(Cookie) ->
    list_to_binary(string:lowercase(binary_to_list(binary:encode_hex(
        crypto:hash(sha256, atom_to_list(Cookie)))))).
