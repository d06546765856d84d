"""Checks of a server's port and host:port flags; plain string checks, so a launcher or a tool
can name a bad flag without importing TensorFlow or Reverb (docs/architecture.md)."""

from __future__ import annotations

from distributed_sac.errors import UserError


def check_port(port: int, flag: str) -> int:
    """`port` when it is one a server can listen on; UserError naming `flag` otherwise."""
    if not 1 <= port <= 65535:
        raise UserError(f"{flag} must be a port from 1 to 65535, got {port}")
    return port


def check_address(address: str, flag: str) -> str:
    """`address` when it reads host:port with a valid port; UserError naming `flag` otherwise
    (gRPC would retry a malformed one until connect_timeout_s)."""
    host, _, port = address.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        number = None
    if not host or number is None or not 1 <= number <= 65535:
        raise UserError(f"{flag} must be host:port with a port from 1 to 65535, got {address!r}")
    return address
