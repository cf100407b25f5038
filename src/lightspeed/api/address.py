"""``HOST:PORT`` as people type it and as URLs need it: IPv6 addresses go in brackets.

``[::1]:9735`` is the only spelling of an IPv6 address with a port: ``::1:9735``
is itself a valid IPv6 address, so an unbracketed one is refused rather than
guessed at. Everything this project writes (the daemon's ready line, the
``api_address`` file, ``getinfo``'s ``listen``) uses :func:`format_hostport`, so
what it prints can be pasted back into ``--listen``, ``connect`` or a URL.
"""

from __future__ import annotations

import ipaddress

from lightspeed.errors import UsageError


def _is_ipv6(host: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(host.split("%", 1)[0]), ipaddress.IPv6Address)
    except ValueError:
        return False


def parse_hostport(text: str, option: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) -> (host, port); UsageError naming the option otherwise."""
    usage = f"{option} must be HOST:PORT (e.g. 127.0.0.1:9735 or [::1]:9735), got {text!r}"
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep or not _is_ipv6(host):
            raise UsageError(usage + ": brackets hold an IPv6 address, followed by :PORT")
    else:
        host, sep, port_text = text.rpartition(":")
        if ":" in host:
            raise UsageError(usage + ": put an IPv6 address in brackets")
    if not sep or not host or not (port_text.isascii() and port_text.isdigit()) or int(port_text) > 65535:
        raise UsageError(usage)
    return host, int(port_text)


def format_hostport(host: str, port: int) -> str:
    """The inverse of :func:`parse_hostport` (and the authority part of an http URL)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
