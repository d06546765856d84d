"""Reverb plumbing: the server's tables, a pair's wire format, and every client of them
(docs/architecture.md maps the modules)."""
