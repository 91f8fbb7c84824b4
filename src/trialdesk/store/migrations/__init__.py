"""Alembic migrations; run through :func:`trialdesk.store.database.migrate`."""
