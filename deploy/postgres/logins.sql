-- Login users for the compose stack, run by its `roles` service after deploy/postgres/roles.sql,
-- as the schema's owner. Idempotent; passwords come from psql variables (-v name=value):
--   relay_svc     IN ROLE vertector_relay     the relay
--   notes-service IN ROLE vertector_consumer  the example notes consumer, named like its inbox
--                                             consumer (row-level security); owns schema `notes`
--   schedule_svc  IN ROLE vertector_producer  a producing service (the deploy check uses it)
\set ON_ERROR_STOP on

SELECT format('CREATE ROLE %I LOGIN IN ROLE %I', login, role)
FROM (VALUES ('relay_svc', 'vertector_relay'), ('notes-service', 'vertector_consumer'),
             ('schedule_svc', 'vertector_producer')) AS wanted(login, role)
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = login)
\gexec

ALTER ROLE relay_svc PASSWORD :'relay_password';
ALTER ROLE "notes-service" PASSWORD :'notes_password';
ALTER ROLE schedule_svc PASSWORD :'producer_password';

-- The notes service keeps its own tables in its own schema; the inbox stays in `public`.
CREATE SCHEMA IF NOT EXISTS notes AUTHORIZATION "notes-service";
ALTER ROLE "notes-service" SET search_path = notes, public;
