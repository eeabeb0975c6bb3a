"""What counts as one client address, for rate limits, the worker's address cap and alerts."""

from __future__ import annotations

import ipaddress


def address_key(address: str) -> str:
    """What per-address limits count: IPv4, the address; IPv6, its /64.

    One subscriber usually holds a whole /64 (RFC 6177) and may use any address in it, so
    a limit per IPv6 address would be a limit per attempt. An IPv4 client of a dual-stack
    socket arrives as ``::ffff:a.b.c.d``: its key is the IPv4 address, or one /64 would
    hold every IPv4 client.
    """
    if ":" not in address:
        return address
    try:
        ip = ipaddress.IPv6Address(address)
    except ValueError:
        return address
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((ip, 64), strict=False))
