"""The scoring service (``humwatch serve``) and its client (``humwatch listen``).

=================  ==========================================================================
``config``         the service's settings (``humwatch serve``'s options), checked before any work
``store``          SQLAlchemy 2 models, engine and sessions; Alembic migrations (``migrations/``)
``scoring``        the monitors of a folder, loaded once, one lock each
``ingest``         an upload: checks, scoring, the stored row (idempotent), kept audio, retention
``alerts``         the K-of-N / M rule, acknowledging, the webhook thread
``auth``           tokens with scopes, stored as hashes; the FastAPI dependency that checks them
``guard``          security headers, rate limits (failed sign-ins, uploads), the write probe of /health
``queries``        what the API and the dashboard read
``api``            ``/api/v1`` and ``/health``
``dashboard``      server-rendered pages (``templates/``, ``static/``), login, ``/docs``
``app``            :func:`create_app`: the FastAPI application of one process
``listen``         the client: microphone or watched folder -> spool -> the service
=================  ==========================================================================
"""
