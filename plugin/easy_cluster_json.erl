%%% easy_cluster_json: the one line of JSON every easy_cluster command answers.
%%%
%%% A command's result is a restuple: {ok, Json} or {?FAILED, Json}. A code other than `error`
%%% makes ejabberdctl print our JSON as it is (with `error` it prints an Erlang term), and exit
%%% with that status.
-module(easy_cluster_json).

-export([ok/1, failed/1, encode/1, fmt/1, safe/1]).
-export_type([answer/0, json/0]).

-define(FAILED, 1).

-type answer() :: {ok | ?FAILED, string()}.
-type json() :: null | boolean() | number() | binary() | [json()] | #{json() => json()}.

%% A command that did what it was asked: exit status 0.
-spec ok(map()) -> answer().
ok(Map) ->
    {ok, encode(Map)}.

%% A command that did not: exit status ?FAILED, its JSON printed all the same.
-spec failed(map()) -> answer().
failed(Map) ->
    {?FAILED, encode(Map)}.

-spec encode(term()) -> string().
encode(Term) ->
    Encoder = encoder(),
    binary_to_list(iolist_to_binary(Encoder:encode(jsonable(Term)))).

%% OTP's own json where the VM has it (OTP 27: Debian 13; ejabberd 26.07 no longer depends on
%% jiffy, so a fresh 26.07 host has none), else jiffy (Debian 12's OTP 25, which ejabberd 23.01
%% and 24.12 bring it with).
-spec encoder() -> json | jiffy.
encoder() ->
    case code:ensure_loaded(json) of
        {module, json} -> json;
        _ -> jiffy
    end.

-spec jsonable(term()) -> json().
jsonable(M) when is_map(M) ->
    maps:from_list([{key(K), jsonable(V)} || {K, V} <- maps:to_list(M)]);
jsonable(L) when is_list(L) -> [jsonable(X) || X <- L];
jsonable(B) when is_binary(B); is_number(B); is_boolean(B); B == null -> B;
jsonable(A) when is_atom(A) -> atom_to_binary(A, utf8);
jsonable(Other) -> fmt(Other).

key(K) when is_atom(K) -> atom_to_binary(K, utf8);
key(K) when is_binary(K) -> K;
key(K) -> fmt(K).

%% Any term as a JSON value: a binary, an object, or the term as Erlang prints it.
-spec fmt(term()) -> json().
fmt(Term) when is_binary(Term) -> Term;
fmt(Term) when is_map(Term) -> jsonable(Term);
fmt(Term) when is_atom(Term) -> atom_to_binary(Term, utf8);
fmt(Term) -> iolist_to_binary(io_lib:format("~0p", [Term])).

%% What Fun returns, or null if it fails.
-spec safe(fun(() -> T)) -> T | null.
safe(Fun) ->
    try Fun() catch _:_ -> null end.
