"""The uploader that runs beside the store gateway: a durable outbox of k-suppressed hourly aggregates and
pseudonymous app visits, sent to the cloud in signed, compressed, idempotent batches."""
