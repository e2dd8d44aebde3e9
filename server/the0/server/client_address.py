"""Who is calling from where: the one reading of a caller's address and user agent.

Used by identity (login throttles, sessions), the rate limiter (anonymous callers) and the
audit trail, so that each names the same address for the same call.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from the0.server.settings import IPNetwork

USER_AGENT_MAX = 256
Metadata = Iterable[tuple[str, str | bytes]]


def address_from(peer: str, metadata: Metadata, trusted_proxies: Sequence[IPNetwork]) -> str:
    """The caller's IP from the gRPC peer and the call's metadata.

    Only a trusted proxy (Envoy) may speak for someone else: if the TCP peer is one, the
    answer is the right-most x-forwarded-for entry that is not itself a trusted proxy
    (each proxy appends the address it saw; everything left of that is the client's own
    claim); otherwise the peer itself, whatever the header says.
    """
    peer_ip = _peer_ip(peer)
    if peer_ip is None:
        return "unknown"
    if not _trusted(peer_ip, trusted_proxies):
        return str(peer_ip)
    forwarded = ",".join(v for k, v in metadata if k == "x-forwarded-for" and isinstance(v, str))
    nearest = peer_ip
    for entry in reversed([e.strip() for e in forwarded.split(",") if e.strip()]):
        try:
            hop = ipaddress.ip_address(entry)
        except ValueError:  # not an address: the hop that wrote it is the last we can name
            return str(nearest)
        if not _trusted(hop, trusted_proxies):
            return str(hop)
        nearest = hop
    return str(nearest)  # every hop is trusted (a request from the proxies' own network)


def user_agent_from(metadata: Metadata) -> str:
    """The user agent as sent (Envoy passes the browser's), cut to 256 characters."""
    for key, value in metadata:
        if key == "user-agent" and isinstance(value, str):
            return value[:USER_AGENT_MAX]
    return ""


def _peer_ip(peer: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    # "ipv4:127.0.0.1:1234" or "ipv6:[::1]:1234"; a unix socket has no address.
    kind, _, rest = peer.partition(":")
    host = rest.rsplit(":", 1)[0].strip("[]") if kind in {"ipv4", "ipv6"} else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # a dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d
    return address


def _trusted(address: ipaddress.IPv4Address | ipaddress.IPv6Address, networks: Sequence[IPNetwork]) -> bool:
    return any(address.version == network.version and address in network for network in networks)
