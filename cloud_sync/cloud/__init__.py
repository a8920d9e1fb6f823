"""The cloud side: an ingest API over SQLite or PostgreSQL, and the import of ad exposures."""
