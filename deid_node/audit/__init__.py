"""The audit database, the only SQL: schema, migrations, engine, db, writer, export (CSV).

records (statuses, records, filters) and url (SQLite URLs) import no SQLAlchemy: the
pipeline, config loading and worker processes use them and must stay light, so nothing
is imported here.
"""
