%%% easy_cluster_offline: the heal's carry-over of offline messages from the losing side
%%% (`easy_cluster_offline_export FILE` before its restart, `easy_cluster_offline_import FILE`
%%% after it).
-module(easy_cluster_offline).

-export([offline_export/1, offline_import/1]).

%% A heal restarts the losing side with the winner's data: what it wrote during the partition
%% is discarded, and with it the messages it stored offline for users it could not reach on the
%% other side (seen in `make load`: hundreds in a 25 s partition). Before the restart, the
%% toolkit has the loser write the offline messages stored since it lost a peer (older ones the
%% winner has too, or delivered meanwhile) to a file; after it, they are stored again, those
%% not there yet, and fetched by their users' available sessions.
-spec offline_export(string()) -> easy_cluster_json:answer().
offline_export(File) ->
    Since = easy_cluster_partition:lost_peer_since(),
    Records = case lists:member(offline_msg, mnesia:system_info(tables)) of
                  true ->
                      All = mnesia:dirty_match_object(mnesia:table_info(offline_msg, wild_pattern)),
                      [R || R <- All, Since == always orelse element(3, R) >= Since];
                  false -> []        % offline messages not in Mnesia (SQL): nothing discarded
              end,
    case file:write_file(File, term_to_binary(Records)) of
        ok -> easy_cluster_json:ok(#{ok => true, messages => length(Records)});
        {error, Why} -> easy_cluster_json:failed(#{ok => false, reason => easy_cluster_json:fmt({File, Why})})
    end.

-spec offline_import(string()) -> easy_cluster_json:answer().
offline_import(File) ->
    case file:read_file(File) of
        {ok, Bin} ->
            Records = binary_to_term(Bin),
            Missing = [R || R <- Records, not lists:member(R, mnesia:dirty_read(offline_msg, element(2, R)))],
            case mnesia:transaction(fun() -> lists:foreach(fun mnesia:write/1, Missing) end) of
                {atomic, ok} ->
                    Users = lists:usort([element(2, R) || R <- Missing]),
                    %% mod_offline caches each user's message count on every node: written here
                    %% behind its back, the counts are dropped everywhere
                    lists:foreach(fun(US) -> forget_offline_count(US) end, Users),
                    lists:foreach(fun({U, S}) -> easy_cluster_delivery:refetch(U, S) end, Users),
                    easy_cluster_json:ok(#{ok => true, imported => length(Missing), read => length(Records)});
                {aborted, Why} -> easy_cluster_json:failed(#{ok => false, reason => easy_cluster_json:fmt(Why)})
            end;
        {error, Why} -> easy_cluster_json:failed(#{ok => false, reason => easy_cluster_json:fmt({File, Why})})
    end.

forget_offline_count(US) ->
    try ets_cache:delete(offline_msg_counter_cache, US, ejabberd_cluster:get_nodes())
    catch _:_ -> ok         % no such cache (use_cache: false)
    end.

