"""The audit database, the only SQL: schema, migrations, sql_engine, db, writer, export (CSV).

records (records, filters, times) imports no SQLAlchemy: the CLI and the console read
filters from it before opening a database, so nothing is imported here. The statuses and
database URLs it shares with the rest sit on the ground floor (object_status, database_url).
"""
