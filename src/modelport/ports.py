"""Is a host port free? Checked before any work (a build, a container), naming what holds it.

One helper for every command that listens or publishes: ``serve`` binds the port itself;
``run`` and ``stack up`` have Docker publish it, whose proxy binds it on this host, so the same
bind test answers for them (their callers name containers that publish it from the engine).
"""

from __future__ import annotations

import errno
import socket

from modelport.errors import ModelportError


class PortInUseError(ModelportError):
    """A port this command would listen on or publish is taken."""


def check_port(host: str, port: int, *, option: str = "--port", holder: str | None = None,
               only_conflicts: bool = False) -> None:
    """Raise PortInUseError unless ``host:port`` can be bound here. ``holder``: what holds it,
    when the caller knows (a container); else "another process". ``only_conflicts``: fail only
    when it is in use (Docker, as root, may publish where this process may not bind)."""
    if holder is None:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
                return
            except OSError as e:
                if e.errno != errno.EADDRINUSE:
                    if only_conflicts:
                        return
                    raise PortInUseError(f"Cannot listen on {host}:{port}: {e.strerror}. "
                                         f"Pass {option} with another port.") from None
        holder = "another process"
    raise PortInUseError(f"Cannot listen on {host}:{port}: port {port} is already in use by {holder}. "
                         f"Stop it, or pass {option} with another port.")
