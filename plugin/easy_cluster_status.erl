%%% easy_cluster_status: this node's view of the cluster (`ejabberdctl easy_cluster_status`), and
%%% every member's, asked from one node (`easy_cluster_statuses`).
-module(easy_cluster_status).

-export([status/0, statuses/0, status_map/0]).
-export([where_to_commit/1, registered_users/0, ejabberd_version/0, versions/0]).

-define(PLUGIN_VERSION, <<"1.17.0">>).

-spec status() -> easy_cluster_json:answer().
status() ->
    easy_cluster_json:ok(status_map()).

%% Every member's own status, asked from here in one go: the toolkit's checks after a change
%% make one ejabberdctl call (a VM of its own, ~0.2 s of CPU) rather than one per host.
%% A member that does not answer maps to the error. (Asked as easy_cluster:status_map/0, the
%% name every version of the plugin answers to.)
-spec statuses() -> easy_cluster_json:answer().
statuses() ->
    Members = mnesia:system_info(db_nodes),
    Results = erpc:multicall(Members, easy_cluster, status_map, [], 5000),
    easy_cluster_json:ok(
      #{statuses => maps:from_list(
                      [{N, case R of
                               {ok, M} when is_map(M) -> M;
                               Error -> #{error => easy_cluster_json:fmt(Error)}
                           end} || {N, R} <- lists:zip(Members, Results)])}).

-spec status_map() -> map().
status_map() ->
    Tables = mnesia:system_info(tables),
    Missing = missing_tables(),
    SchemaType = mnesia:table_info(schema, storage_type),
    Replicas = maps:from_list(
                 [{T, maps:from_list([{N, Type} || {N, Type} <- where_to_commit(T)])}
                  || T <- Tables]),
    #{node => node(),
      plugin_version => ?PLUGIN_VERSION,
      ejabberd_version => ejabberd_version(),
      otp_release => list_to_binary(erlang:system_info(otp_release)),
      started_at => started_at(),
      db_nodes => mnesia:system_info(db_nodes),
      running_db_nodes => mnesia:system_info(running_db_nodes),
      schema => SchemaType,
      master => is_master(),
      missing_tables => Missing,
      tables => Replicas,
      partitioned_with => easy_cluster_partition:partitioned_with(),
      master_nodes => lists:usort(
                        lists:append([mnesia:table_info(T, master_nodes)
                                      || T <- Tables])),
      sessions => easy_cluster_json:safe(fun() -> length(ejabberd_sm:dirty_get_my_sessions_list()) end),
      registered_users => easy_cluster_json:safe(fun registered_users/0)}.

%% Tables of the cluster this node holds no copy of.
missing_tables() ->
    [T || T <- mnesia:system_info(tables), mnesia:table_info(T, storage_type) == unknown].

%% A master holds a copy of every table and keeps the schema on disc.
is_master() ->
    mnesia:table_info(schema, storage_type) == disc_copies andalso missing_tables() == [].

%% The nodes a table's writes go to, with the table's storage type on each.
-spec where_to_commit(atom()) -> [{node(), atom()}].
where_to_commit(Table) ->
    try mnesia:table_info(Table, where_to_commit)
    catch _:_ -> []
    end.

-spec registered_users() -> non_neg_integer().
registered_users() ->
    lists:sum([ejabberd_auth:count_users(H) || H <- ejabberd_option:hosts()]).

%% The VM's start, in Unix seconds: a restart shows as a new value.
started_at() ->
    erlang:convert_time_unit(erlang:system_info(start_time) + erlang:time_offset(),
                             native, second).

%% What the metrics name: ejabberd's version and the plugin's.
-spec versions() -> #{ejabberd_version := binary() | null, plugin_version := binary()}.
versions() ->
    #{ejabberd_version => ejabberd_version(), plugin_version => ?PLUGIN_VERSION}.

-spec ejabberd_version() -> binary() | null.
ejabberd_version() ->
    case application:get_key(ejabberd, vsn) of
        {ok, Vsn} -> list_to_binary(Vsn);
        undefined -> null
    end.
