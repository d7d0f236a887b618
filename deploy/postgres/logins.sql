-- Login users for the compose stack, run by its `roles` service after deploy/postgres/roles.sql,
-- as the schema's owner. Idempotent; passwords come from psql variables (-v name=value):
--   relay_svc     IN ROLE vertector_relay     the relay
--   notes-service IN ROLE vertector_consumer  the example notes consumer, named like its inbox
--                                             consumer (row-level security); owns schema `notes`
--   search-indexer IN ROLE vertector_consumer the example search indexer, likewise; owns schema
--                                             `search`
--   schedule_svc  IN ROLE vertector_producer  a producing service (the deploy check uses it)
\set ON_ERROR_STOP on

SELECT format('CREATE ROLE %I LOGIN IN ROLE %I', login, role)
FROM (VALUES ('relay_svc', 'vertector_relay'), ('notes-service', 'vertector_consumer'),
             ('search-indexer', 'vertector_consumer'), ('schedule_svc', 'vertector_producer'))
     AS wanted(login, role)
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = login)
\gexec

ALTER ROLE relay_svc PASSWORD :'relay_password';
ALTER ROLE "notes-service" PASSWORD :'notes_password';
ALTER ROLE "search-indexer" PASSWORD :'search_password';
ALTER ROLE schedule_svc PASSWORD :'producer_password';

-- The notes service keeps its own tables in its own schema; the inbox stays in `public`.
CREATE SCHEMA IF NOT EXISTS notes AUTHORIZATION "notes-service";
ALTER ROLE "notes-service" SET search_path = notes, public;
CREATE SCHEMA IF NOT EXISTS search AUTHORIZATION "search-indexer";
ALTER ROLE "search-indexer" SET search_path = search, public;
