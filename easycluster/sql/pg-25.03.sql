-- applied: SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = 'users' AND column_name = 'type')
-- ejabberd 25.03: a password's type in users (ejabberd_auth_sql's schema version 2), and the
-- primary key (server_host, username, "type"). A row written before has type 0: 25.03 reads it
-- as before (a plain or SCRAM password) and sets its real type at its first read.
ALTER TABLE users ADD COLUMN "type" smallint NOT NULL DEFAULT 0;
ALTER TABLE users ALTER COLUMN "type" DROP DEFAULT;
ALTER TABLE users DROP CONSTRAINT users_pkey, ADD PRIMARY KEY (server_host, username, "type");
