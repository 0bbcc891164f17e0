%%% easy_cluster_sql: `fab migrate-to-sql`'s work inside a node (docs/runbooks/migrate-to-sql.md).
%%%
%%%   easy_cluster_sql_export HOST   ejabberd's own export (ejd2sql, straight into the database the
%%%                                  node's sql_* options name): every store of the vhost; answers
%%%                                  when it started (the node's clock, seconds) and how long it took
%%%   easy_cluster_code_path         library directories installed since the node started (ejabberd's
%%%                                  PostgreSQL driver, installed while it runs) added to its code
%%%                                  path: the driver loads without a restart
%%%   easy_cluster_sql_delta HOST SINCE
%%%                                  what Mnesia received after the export, while the nodes were
%%%                                  switched one by one: accounts and roster items the database
%%%                                  lacks (inserted with the export's own conversion), and the
%%%                                  offline messages stored at or after SINCE (stored as
%%%                                  mod_offline stores one). A message may so arrive twice; it is
%%%                                  never lost.
-module(easy_cluster_sql).

-export([export/1, delta/2, code_path/0]).

-include("xmpp.hrl").          % erlang-p1-xmpp (jid, message: the headers below use them)
-include("mod_offline.hrl").
-include("mod_roster.hrl").

-spec export(string()) -> easy_cluster_json:answer().
export(HostStr) ->
    Host = list_to_binary(HostStr),
    Started = erlang:system_time(second),
    T0 = erlang:monotonic_time(millisecond),
    try ejd2sql:export(Host, sql) of
        _ -> easy_cluster_json:ok(#{ok => true, host => Host, started => Started,
                                    seconds => (erlang:monotonic_time(millisecond) - T0) / 1000})
    catch Class:Reason ->
        easy_cluster_json:failed(#{ok => false, host => Host,
                                   reason => easy_cluster_json:fmt({Class, Reason})})
    end.

-spec code_path() -> easy_cluster_json:answer().
code_path() ->
    Path = code:get_path(),
    New = [D || D <- filelib:wildcard(filename:join(code:lib_dir(), "*/ebin")), not lists:member(D, Path)],
    lists:foreach(fun code:add_pathz/1, New),
    easy_cluster_json:ok(#{ok => true, added => [list_to_binary(D) || D <- New]}).

-spec delta(string(), string()) -> easy_cluster_json:answer().
delta(HostStr, SinceStr) ->
    Host = list_to_binary(HostStr),
    Since = list_to_integer(SinceStr),
    try
        Users = copy_missing(Host, ejabberd_auth, passwd,
                             fun({passwd, {U, S}, _}) when S == Host -> {true, user_missing(Host, U)};
                                (_) -> false end),
        Roster = copy_missing(Host, mod_roster, roster,
                              fun(#roster{usj = {U, S, LJID}}) when S == Host ->
                                      {true, item_missing(Host, U, jid:encode(LJID))};
                                 (_) -> false end),
        Offline = store_offline_since(Host, Since),
        easy_cluster_json:ok(#{ok => true, host => Host, users => Users, roster => Roster,
                               offline => Offline})
    catch Class:Reason ->
        easy_cluster_json:failed(#{ok => false, host => Host,
                                   reason => easy_cluster_json:fmt({Class, Reason})})
    end.

%% Records of Table for Host that Missing says the database lacks, written with the export's
%% own conversion (the module's SQL backend's export/1): one transaction each.
-spec copy_missing(binary(), module(), atom(), fun((tuple()) -> false | {true, boolean()})) -> non_neg_integer().
copy_missing(Host, Module, Table, Missing) ->
    {Table, Convert} = lists:keyfind(Table, 1, (gen_mod:db_mod(sql, Module)):export(Host)),
    Records = [R || R <- mnesia:dirty_select(Table, [{'_', [], ['$_']}]), Missing(R) == {true, true}],
    lists:foreach(
      fun(R) ->
              Queries = [ejabberd_sql:sql_query_to_iolist(pgsql, Q) || Q <- Convert(Host, R)],
              {atomic, _} = ejabberd_sql:sql_transaction(Host, Queries)
      end, Records),
    length(Records).

-spec user_missing(binary(), binary()) -> boolean().
user_missing(Host, User) ->
    absent(Host, [<<"SELECT 1 FROM users WHERE username = ">>, literal(User),
                  <<" AND server_host = ">>, literal(Host)]).

-spec item_missing(binary(), binary(), binary()) -> boolean().
item_missing(Host, User, Jid) ->
    absent(Host, [<<"SELECT 1 FROM rosterusers WHERE username = ">>, literal(User),
                  <<" AND server_host = ">>, literal(Host), <<" AND jid = ">>, literal(Jid)]).

absent(Host, Query) ->
    case ejabberd_sql:sql_query(Host, Query) of
        {selected, _, []} -> true;
        {selected, _, [_ | _]} -> false;
        Err -> error({sql, Err})
    end.

literal(Bin) -> ejabberd_sql:to_string_literal(pgsql, Bin).

-spec store_offline_since(binary(), integer()) -> non_neg_integer().
store_offline_since(Host, Since) ->
    Msgs = [M || #offline_msg{us = {_, S}, timestamp = TS} = M
                     <- mnesia:dirty_select(offline_msg, [{'_', [], ['$_']}]),
                 S == Host, seconds(TS) >= Since],
    lists:foreach(fun(M) -> ok = mod_offline_sql:store_message(M#offline_msg{packet = packet(M)}) end, Msgs),
    length(Msgs).

%% Mnesia holds the stanza as XML (mod_offline_mnesia, mod_offline_easy); the SQL backend
%% takes it decoded, as the export does.
packet(#offline_msg{packet = {xmlel, _, _, _} = El}) -> xmpp:decode(El, <<"jabber:client">>, [ignore_els]);
packet(#offline_msg{packet = Packet}) -> Packet.

seconds({Mega, Secs, _}) -> Mega * 1000000 + Secs;
seconds(_) -> 0.
