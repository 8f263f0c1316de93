"""ICE host candidates on loopback: aioice leaves out 127.0.0.1, which a local-only call needs.

aioice gathers a host candidate for every interface address except ``127.0.0.1`` (and
``::1``). Where main is the only thing on the machine's loopback (a browser on the same host
started with ``--allow-loopback-in-peer-connection``, a container or network namespace with
nothing but ``lo``), the server would then answer with no candidate at all and the call could
never connect. :func:`allow_loopback_candidates` wraps aioice's address lookup once per
process so 127.0.0.1 is offered too; on a LAN the other addresses are still there, and a remote
peer's check against its own loopback simply fails.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import aioice.ice

LOOPBACK = "127.0.0.1"


def _with_loopback(lookup: Callable[..., list[str]]) -> Callable[..., list[str]]:
    @functools.wraps(lookup)
    def addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        found = list(lookup(use_ipv4=use_ipv4, use_ipv6=use_ipv6))
        if use_ipv4 and LOOPBACK not in found:
            found.append(LOOPBACK)
        return found

    addresses.loopback_added = True  # type: ignore[attr-defined]
    return addresses


def allow_loopback_candidates() -> None:
    """Offer a 127.0.0.1 host candidate in every ICE gathering of this process (idempotent)."""
    current = aioice.ice.get_host_addresses
    if not getattr(current, "loopback_added", False):
        aioice.ice.get_host_addresses = _with_loopback(current)
