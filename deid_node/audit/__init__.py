"""The audit database: schema, migrations, records, queries and CSV (db); the only SQL."""
