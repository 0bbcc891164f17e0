%%% mod_offline_easy: mod_offline's Mnesia storage (`mod_offline: db_type: easy`), with one change:
%%% a message is stored in a transaction, not with a dirty write.
%%%
%%% mod_offline_mnesia stores with mnesia:dirty_write (it reaches the other nodes a little later)
%%% and hands the messages out with a transaction that reads the user's messages on its own
%%% node and deletes them on every node. In a cluster the two race: a user logging in on node A
%%% while node B stores a message for it reads A's copy without the message, and its delete
%%% then removes the message from B's copy too (or the late dirty write revives it on A only,
%%% where the next hand-out elsewhere deletes it unread). Seen in `make load`: acknowledged,
%%% stored, in no node's offline storage, never delivered. Stored in a transaction, a message
%%% and a hand-out are serialized on the user's key: the hand-out takes it, or it is stored
%%% after the hand-out, and then the plugin's offline_recheck has the user's session fetch it.
%%% Same table (offline_msg), same data: a cluster switches between the two by a config change.
-module(mod_offline_easy).
-behaviour(mod_offline).

-export([init/2, store_message/1, pop_messages/2, remove_expired_messages/1,
         remove_old_messages/2, remove_user/2, read_message_headers/2,
         read_message/3, remove_message/3, read_all_messages/2,
         remove_all_messages/2, count_messages/2, import/1,
         remove_old_messages_batch/4]).

-include("xmpp.hrl").
-include("mod_offline.hrl").
-include("logger.hrl").

-spec store_message(#offline_msg{}) -> ok | {error, db_failure}.
store_message(#offline_msg{packet = Pkt} = OffMsg) ->
    Record = OffMsg#offline_msg{packet = xmpp:encode(Pkt)},
    case mnesia:transaction(fun() -> mnesia:write(Record) end) of
        {atomic, ok} -> ok;
        {aborted, Why} ->
            ?ERROR_MSG("easy_cluster: could not store an offline message: ~p", [Why]),
            {error, db_failure}
    end.

%% The rest is mod_offline_mnesia's (the table is created there, with its transforms).
%% (The specs are mod_offline's callbacks'.)
-spec init(binary(), gen_mod:opts()) -> any().
init(Host, Opts) -> mod_offline_mnesia:init(Host, Opts).
-spec pop_messages(binary(), binary()) -> {ok, [#offline_msg{}]} | {error, any()}.
pop_messages(U, S) -> mod_offline_mnesia:pop_messages(U, S).
-spec remove_expired_messages(binary()) -> {atomic, any()}.
remove_expired_messages(S) -> mod_offline_mnesia:remove_expired_messages(S).
-spec remove_old_messages(non_neg_integer(), binary()) -> {atomic, any()}.
remove_old_messages(Days, S) -> mod_offline_mnesia:remove_old_messages(Days, S).
-spec remove_user(binary(), binary()) -> any().
remove_user(U, S) -> mod_offline_mnesia:remove_user(U, S).
-spec read_message_headers(binary(), binary()) ->
          [{non_neg_integer(), jid(), jid(), undefined | erlang:timestamp(), xmlel()}].
read_message_headers(U, S) -> mod_offline_mnesia:read_message_headers(U, S).
-spec read_message(binary(), binary(), non_neg_integer()) -> {ok, #offline_msg{}} | error.
read_message(U, S, Seq) -> mod_offline_mnesia:read_message(U, S, Seq).
-spec remove_message(binary(), binary(), non_neg_integer()) -> ok | {error, any()}.
remove_message(U, S, Seq) -> mod_offline_mnesia:remove_message(U, S, Seq).
-spec read_all_messages(binary(), binary()) -> [#offline_msg{}].
read_all_messages(U, S) -> mod_offline_mnesia:read_all_messages(U, S).
-spec remove_all_messages(binary(), binary()) -> {atomic, any()}.
remove_all_messages(U, S) -> mod_offline_mnesia:remove_all_messages(U, S).
-spec count_messages(binary(), binary()) -> {ets_cache:tag(), non_neg_integer()}.
count_messages(U, S) -> mod_offline_mnesia:count_messages(U, S).
-spec import(#offline_msg{}) -> ok.
import(Msg) -> mod_offline_mnesia:import(Msg).
-spec remove_old_messages_batch(binary(), non_neg_integer(), pos_integer(), any()) ->
          {ok, any(), non_neg_integer()} | {error, term()}.
remove_old_messages_batch(S, Days, Batch, Pos) -> mod_offline_mnesia:remove_old_messages_batch(S, Days, Batch, Pos).
