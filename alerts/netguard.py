"""Where webhooks may go: public addresses only, unless an endpoint is marked ``internal``.

A rules file is configuration, but a webhook URL that reaches the worker's own network (Redis on
localhost, a cloud metadata service on 169.254.169.254, a private admin API) turns alert delivery
into a request forger. So:

* at config time, an endpoint whose host is an IP literal (or ``localhost``) that is not a global
  address is refused unless the endpoint says ``internal = true`` (:func:`check_endpoint_host`);
* at connect time, every host name is resolved by :class:`GuardedResolver`, which refuses names that
  resolve to any non-global address (private, loopback, link-local, shared, reserved, multicast)
  unless the name belongs to an internal endpoint. The check is on the very addresses the
  connection then uses, so a DNS answer that changes between check and connect (rebinding) cannot
  slip through.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

#: Host names that always mean this machine.
LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


class DisallowedAddress(aiohttp.ClientConnectionError):
    """A webhook host resolved to an address that a non-internal endpoint may not reach."""


def is_public(address: str) -> bool:
    """Whether ``address`` (an IP literal) is a global unicast address.

    :param address: IPv4 or IPv6 text (a zone suffix ``%eth0`` is ignored).
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return bool(ip.is_global) and not ip.is_multicast


def literal_address(host: str) -> str | None:
    """The IP address a URL host names literally (``[::1]`` brackets stripped), else ``None``."""
    h = host.strip("[]")
    try:
        ipaddress.ip_address(h.split("%", 1)[0])
    except ValueError:
        return None
    return h


def check_endpoint_host(host: str, *, internal: bool) -> str | None:
    """Why an endpoint host is refused at config time, or ``None`` when it is acceptable.

    :param host: the URL's host name or IP literal.
    :param internal: the endpoint is marked ``internal`` (private targets allowed).
    """
    if internal:
        return None
    if host.lower().rstrip(".") in LOCAL_NAMES:
        return f"host {host!r} is this machine"
    lit = literal_address(host)
    if lit is not None and not is_public(lit):
        return f"address {lit} is not public (private, loopback, link-local or reserved)"
    return None


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that refuses non-public answers for hosts not marked internal.

    :param internal_hosts: host names (lower case) of endpoints marked ``internal``.
    :param resolver: the resolver to ask (aiohttp's default when ``None``).
    """

    def __init__(self, internal_hosts: Iterable[str] = (), resolver: AbstractResolver | None = None):
        self.internal_hosts = frozenset(h.lower().rstrip(".") for h in internal_hosts)
        self._resolver = resolver or aiohttp.DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: Any = socket.AF_INET) -> list[ResolveResult]:
        answers = await self._resolver.resolve(host, port, family)
        if host.lower().rstrip(".") in self.internal_hosts:
            return answers
        if host.lower().rstrip(".") in LOCAL_NAMES or any(not is_public(a["host"]) for a in answers):
            raise DisallowedAddress(f"webhook host {host!r} resolves to a non-public address; mark the endpoint "
                                    "internal = true in the rules file if it is meant to be reached")
        return answers

    async def close(self) -> None:
        await self._resolver.close()


def guarded_session(internal_hosts: Iterable[str] = (), **kwargs: Any) -> aiohttp.ClientSession:
    """An ``aiohttp.ClientSession`` whose connections go through :class:`GuardedResolver`.

    :param internal_hosts: host names of endpoints marked ``internal``.
    :param kwargs: more ``ClientSession`` arguments.
    """
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=GuardedResolver(internal_hosts)), **kwargs)
