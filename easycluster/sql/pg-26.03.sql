-- applied: SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = 'rosterusers' AND column_name = 'approved')
-- ejabberd 26.03: rosterusers.approved (pre-approved subscriptions, mod_roster_sql's schema
-- version 2); false for every roster item there is.
ALTER TABLE rosterusers ADD COLUMN approved boolean NOT NULL DEFAULT false;
ALTER TABLE rosterusers ALTER COLUMN approved DROP DEFAULT;
