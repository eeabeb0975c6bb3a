"""Listening sockets: gunicorn bind strings, and sockets `bastion serve` binds itself."""

from __future__ import annotations

import socket


class ListenError(RuntimeError):
    """A port can't be listened on; the message is one line for the operator."""


def address(host: str, port: int) -> str:
    """A gunicorn bind address; IPv6 literals need brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listen(host: str, port: int, backlog: int = 128) -> socket.socket:
    """A bound, listening TCP socket, inheritable so a child server can take it over."""
    try:
        infos = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE | socket.AI_NUMERICSERV
        )
    except socket.gaierror as exc:
        raise ListenError(f"cannot resolve {host!r}: {exc.strerror}") from None
    family, kind, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {address(host, port)}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


__all__ = ["ListenError", "address", "listen"]
