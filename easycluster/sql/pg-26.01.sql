-- applied: SELECT to_regclass('invite_token') IS NOT NULL
-- ejabberd 26.01: the invite_token table (mod_invites; created whether or not it is enabled, as
-- a new database has it).
CREATE TABLE invite_token (
    token text NOT NULL,
    username text NOT NULL,
    server_host text NOT NULL,
    invitee text NOT NULL DEFAULT '',
    created_at timestamp NOT NULL DEFAULT now(),
    expires timestamp NOT NULL DEFAULT now(),
    "type" character(1) NOT NULL,
    account_name text NOT NULL,
    PRIMARY KEY (token)
);
CREATE INDEX i_invite_token_username_server_host ON invite_token USING btree (username, server_host);
CREATE INDEX i_invite_token_invitee ON invite_token USING btree (invitee);
