"""Reverb plumbing: the tables (tables), reaching the server (connection), writing experience
(writer) and moving weights (weights)."""
