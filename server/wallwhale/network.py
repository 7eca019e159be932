"""Client addresses and IP allow/deny rules.

The client is the peer of the connection, unless that peer is the proxy: a caller on the server's
Unix socket (its folder is private: only the service user, that is Envoy, reaches it), or a
configured trusted proxy over TCP. Then x-forwarded-for is read from the right, skipping trusted
proxies, and the first address that is not one is the client. A forwarded-for header from anyone
else is ignored (it is just text a client chose).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """CIDRs or single addresses; raises ValueError naming the bad entry."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address or CIDR network") from None
    return tuple(networks)


_LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
# The client address of a call over the Unix socket that names no client (Envoy's health checks).
LOCAL_SOCKET = "local"


def is_loopback(network: Network) -> bool:
    """True when `network` holds a loopback address (or an IPv4-mapped one): any local user can
    connect from those."""
    if isinstance(network, ipaddress.IPv6Network) and network.network_address.ipv4_mapped is not None:
        return network.network_address.ipv4_mapped.is_loopback
    return any(network.version == loopback.version and network.overlaps(loopback) for loopback in _LOOPBACK)


def _address(text: str) -> Address | None:
    try:
        address = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    # An IPv4 client seen over an IPv6 socket counts as its IPv4 address.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _within(address: Address, networks: tuple[Network, ...]) -> bool:
    return any(address.version == network.version and address in network for network in networks)


@dataclass(frozen=True)
class IpRules:
    allow: tuple[Network, ...] = ()
    deny: tuple[Network, ...] = ()
    trusted_proxies: tuple[Network, ...] = ()

    @property
    def active(self) -> bool:
        return bool(self.allow or self.deny)

    def client_address(self, peer: str, forwarded_for: str = "", *, from_proxy_socket: bool = False) -> str:
        """`peer`: the connection's address; `from_proxy_socket`: the call came over the Unix socket."""
        if from_proxy_socket:
            # The proxy is the peer: the last hop it wrote is its own client.
            hops = forwarded_for.split(",") if forwarded_for else []
            address = _address(hops.pop()) if hops else None
            if address is None:
                return LOCAL_SOCKET
            forwarded_for = ",".join(hops)
        else:
            address = _address(peer)
            if address is None:
                return peer
        if forwarded_for and _within(address, self.trusted_proxies):
            for hop in reversed(forwarded_for.split(",")):
                hop_address = _address(hop)
                if hop_address is None:
                    break  # garbage in the chain: trust nothing further left
                address = hop_address
                if not _within(hop_address, self.trusted_proxies):
                    break
        return str(address)

    def allows(self, client: str) -> bool:
        address = _address(client)
        if address is None:
            return not self.allow  # an address we cannot read passes only when nothing is allow-listed
        if _within(address, self.deny):
            return False
        return not self.allow or _within(address, self.allow)


def outbound_address_allowed(address: Address, allowed: tuple[Network, ...]) -> bool:
    """Whether the server may connect to `address` on a user's behalf (webhooks): public unicast
    addresses only, unless an admin allowed the network. Loopback, private, link-local (and with
    it the cloud metadata address 169.254.169.254), shared, reserved and multicast ranges are not
    global; an IPv4 address wrapped in IPv6 is judged as itself."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if _within(address, allowed):
        return True
    return address.is_global and not address.is_multicast
