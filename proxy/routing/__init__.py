"""Routing with keys and limits: the routing snapshot and where it comes from, request
to function version and key to grant, and per-instance concurrency with the queue."""
