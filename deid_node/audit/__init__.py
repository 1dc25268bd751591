"""The audit database, the only SQL: schema, migrations, engine, db, records, export (CSV).

Nothing is imported here: records (statuses, records, filters) has no SQLAlchemy, and the
pipeline and worker processes that import it must stay light.
"""
