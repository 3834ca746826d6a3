"""Operating the gateway: the admin listener (/metrics, /healthz, /readyz) and, with
--workers N, the worker processes and their shared admin port."""
