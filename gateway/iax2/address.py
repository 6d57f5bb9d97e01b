"""UDP addresses as every option and module of iaxgw writes them.

``Addr`` is ``(address, port)``, the form the sockets give and take.  One syntax for an address on
the command line: ``HOST``, ``HOST:PORT``, ``[V6]`` or ``[V6]:PORT``; an IPv6 address goes in
brackets (a bare ``::1:4570`` could be either), a port is 1..65535, and a malformed one is an
:class:`AddressError` that names the text and what is wrong with it.
"""

from __future__ import annotations

import ipaddress
import socket

Addr = tuple[str, int]

__all__ = ["Addr", "AddressError", "format_addr", "parse_hostport", "split_hostport"]


class AddressError(ValueError):
    """An address text iaxgw cannot use; the message names the text."""


def split_hostport(text: str, default_port: int = 4569) -> Addr:
    """``HOST``, ``HOST:PORT``, ``[V6]``, ``[V6]:PORT`` -> (host as written, port).

    ``default_port`` is the port when the text gives none (it may be 0, "any", for a bind
    address); a port written out must be 1..65535.  Nothing is resolved.
    """
    stripped = text.strip()
    if not stripped:
        raise AddressError("empty address")
    host, port_text = stripped, ""
    if stripped.startswith("["):
        end = stripped.find("]")
        if end < 0:
            raise AddressError(f"{stripped!r}: missing ']'")
        host, rest = stripped[1:end], stripped[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise AddressError(f"{stripped!r}: expected ':PORT' after ']'")
            port_text = rest[1:]
    elif ":" in stripped:
        if stripped.count(":") > 1:
            raise AddressError(f"{stripped!r}: an IPv6 address goes in brackets, "
                               "[V6] or [V6]:PORT")
        host, port_text = stripped.split(":")
    if not host:
        raise AddressError(f"{stripped!r}: empty host")
    if stripped.startswith("[") and ":" not in host:
        raise AddressError(f"{stripped!r}: only an IPv6 address goes in brackets")
    if not port_text and not stripped.endswith(":"):
        return host, default_port
    return host, _port(port_text, stripped)


def _port(port_text: str, text: str) -> int:
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise AddressError(f"{text!r}: port must be 1..65535")
    return int(port_text)


def parse_hostport(text: str, default_port: int = 4569) -> Addr:
    """:func:`split_hostport`, the host then made a numeric address: an IP address as Python
    writes it (``::1``, not ``0::1``), a name resolved to its IPv4 address."""
    host, port = split_hostport(text, default_port)
    try:
        return str(ipaddress.ip_address(host)), port
    except ValueError:
        pass
    if text.strip().startswith("["):
        raise AddressError(f"{text.strip()!r}: {host!r} is not an IPv6 address")
    try:
        return socket.gethostbyname(host), port
    except OSError:
        raise AddressError(f"{text.strip()!r}: cannot resolve host {host!r}") from None


def format_addr(addr: Addr) -> str:
    """``ip:port``, or ``[ip6]:port`` for IPv6, as Asterisk prints a source address (and as
    :func:`split_hostport` reads it back)."""
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
