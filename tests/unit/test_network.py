"""IP allow/deny lists and whose x-forwarded-for is believed (the server applying them:
tests/api/test_ip_rules.py)."""

from __future__ import annotations

import pytest

from wallwhale.config import ConfigError, load_settings
from wallwhale.network import LOCAL_SOCKET, IpRules, is_loopback, parse_networks


def rules(allow: str = "", deny: str = "", trusted: str = "") -> IpRules:
    def split(text: str) -> tuple[object, ...]:
        return parse_networks([part for part in text.split(",") if part])

    return IpRules(split(allow), split(deny), split(trusted))  # type: ignore[arg-type]


def test_cidr_lists_and_deny_winning() -> None:
    office = rules(allow="10.0.0.0/8,2001:db8::/32", deny="10.9.0.0/16")
    assert office.allows("10.1.2.3")
    assert office.allows("2001:db8::1")
    assert not office.allows("10.9.0.1")  # deny wins over allow
    assert not office.allows("192.0.2.1")
    assert not office.allows("::ffff:10.9.0.1")  # IPv4 seen over IPv6 is still denied
    assert rules(deny="127.0.0.1").allows("127.0.0.2")
    assert rules().allows("anything")  # no lists: everyone


def test_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    # The original took X-Forwarded-For from anyone, so a client could claim any address.
    assert rules().client_address("127.0.0.1", "203.0.113.7") == "127.0.0.1"
    trusting = rules(trusted="127.0.0.1/32,10.0.0.0/8")
    assert trusting.client_address("127.0.0.1", "203.0.113.7") == "203.0.113.7"
    # A chain: the client wrote a fake first hop; our own proxies appended the real ones.
    assert trusting.client_address("127.0.0.1", "1.1.1.1, 198.51.100.9, 10.0.0.5") == "198.51.100.9"
    assert trusting.client_address("192.0.2.50", "203.0.113.7") == "192.0.2.50"  # peer not trusted
    assert trusting.client_address("127.0.0.1", "not-an-ip") == "127.0.0.1"
    assert trusting.client_address("::ffff:127.0.0.1", "203.0.113.7") == "203.0.113.7"


def test_over_the_proxy_socket_the_last_forwarded_hop_is_the_client() -> None:
    # The peer of a Unix-socket call has no address: it is the proxy (only it can open the socket).
    assert rules().client_address("", "203.0.113.7", from_proxy_socket=True) == "203.0.113.7"
    # What a client wrote to the left of the hop the proxy appended is not believed...
    assert rules().client_address("", "1.1.1.1, 203.0.113.7", from_proxy_socket=True) == "203.0.113.7"
    # ...unless that hop is itself a trusted proxy (a chain of proxies before Envoy).
    chain = rules(trusted="10.0.0.0/8").client_address("", "198.51.100.9, 10.0.0.5", from_proxy_socket=True)
    assert chain == "198.51.100.9"
    # No forwarded address (Envoy's own health checks), or garbage: the local socket, no IP.
    assert rules().client_address("", "", from_proxy_socket=True) == LOCAL_SOCKET
    assert rules().client_address("", "not-an-ip", from_proxy_socket=True) == LOCAL_SOCKET
    assert not rules(allow="203.0.113.0/24").allows(LOCAL_SOCKET)


def test_loopback_networks_are_recognised() -> None:
    for loopback in ("127.0.0.2", "127.0.0.0/8", "::1", "::ffff:127.0.0.1", "0.0.0.0/0"):
        assert is_loopback(parse_networks([loopback])[0]), loopback
    for remote in ("10.0.0.5", "192.0.2.0/24", "2001:db8::/32", "::ffff:10.0.0.1"):
        assert not is_loopback(parse_networks([remote])[0]), remote


def test_bad_networks_are_named_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WALLWHALE_IP_DENY", "10.0.0.0/8, 300.1.2.3")
    with pytest.raises(ConfigError, match=r"WALLWHALE_IP_DENY.*300\.1\.2\.3"):
        load_settings()
    monkeypatch.setenv("WALLWHALE_IP_DENY", "10.0.0.0/8, 192.0.2.0/24")
    assert load_settings().ip_deny == ["10.0.0.0/8", "192.0.2.0/24"]
