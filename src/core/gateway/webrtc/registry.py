"""The open WebRTC calls of main: admission (``max_peers``), lookup by ``pc_id``, metrics, shutdown.

Metrics (process registry): ``ultravox_webrtc_peers_active`` (gauge: calls answered and not yet
closed) and ``ultravox_webrtc_peers_total{reason}`` (calls ended, by why: client_end,
ice_failed, disconnected, timeout, shutdown). An offer that fails before its answer is not a
call and counts in neither.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
from collections import Counter as Tally
from typing import Any

from prometheus_client import Counter, Gauge

from core.access.principal import OPEN, Principal
from core.config.models import WebRtcConfig
from core.errors import NotFound, Overloaded
from core.gateway.runtime import MainRuntime
from core.gateway.webrtc.ice import allow_loopback_candidates
from core.gateway.webrtc.peer import REASONS, Peer, Reason
from core.gateway.webrtc.signalling import Offer

RETRY_AFTER_S = 5.0


class PeerRegistry:
    def __init__(self, rt: MainRuntime, config: WebRtcConfig) -> None:
        self.rt, self.config = rt, config
        self.peers: dict[str, Peer] = {}
        allow_loopback_candidates()
        self._opening: set[Peer] = set()
        registry = rt.ctx.registry
        self.active = Gauge("ultravox_webrtc_peers_active", "Open WebRTC calls.", registry=registry)
        self.ended = Counter(
            "ultravox_webrtc_peers", "Ended WebRTC calls by reason.", ["reason"], registry=registry
        )
        for reason in REASONS:
            self.ended.labels(reason)

    async def open(self, offer: Offer, by: Principal = OPEN) -> Peer:
        """A new call answering ``offer``; Overloaded (503) at ``max_peers``, InvalidArgument/NotFound as told.

        A peer closed while it was being answered (shutdown, its connection gone) is cleaned up and refused
        with 503 instead of being registered half-alive.
        """
        if len(self.peers) + len(self._opening) >= self.config.max_peers:
            raise Overloaded(
                f"{self.config.max_peers} WebRTC calls are open (gateway.webrtc.max_peers); retry later or end one "
                "with DELETE /api/offer/{pc_id}",
                retry_after_s=RETRY_AFTER_S,
            )
        peer = Peer(self.rt, self.config, self._closed, by=by)
        self._opening.add(peer)
        try:
            await peer.answer(offer)
            peer.check_open()  # a close between the answer and the registration must not register it
        except BaseException:
            await _finish(peer.close(None))
            raise
        finally:
            self._opening.discard(peer)
        self.peers[peer.id] = peer
        self.active.set(len(self.peers))
        return peer

    def get(self, pc_id: str) -> Peer:
        peer = self.peers.get(pc_id)
        if peer is None or peer.closed:
            raise NotFound(
                f"no open WebRTC call {pc_id[:64]!r}: it ended or never existed; start one with POST /api/offer"
            )
        return peer

    async def end(self, pc_id: str, reason: Reason = "client_end") -> None:
        await _finish(self.get(pc_id).close(reason))

    async def close_all(self) -> None:
        """Shutdown: every call (and every offer being answered) ends and every close in flight finishes."""
        peers = [*self.peers.values(), *self._opening]
        await asyncio.gather(*(_finish(p.close("shutdown")) for p in peers), return_exceptions=True)

    def stats(self) -> dict[str, Any]:
        """Open calls and the process's asyncio tasks, threads (also by name, numbers cut off) and file
        descriptors: what a leak check compares."""
        names = Tally(re.sub(r"[-_]?\d+$", "", t.name) for t in threading.enumerate())
        return {
            "peers": len(self.peers),
            "tasks": len(asyncio.all_tasks()),
            "threads": threading.active_count(),
            "thread_names": dict(sorted(names.items())),
            "fds": len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else -1,
        }

    def _closed(self, peer: Peer, reason: Reason | None) -> None:
        if self.peers.pop(peer.id, None) is not None and reason is not None:
            self.ended.labels(reason).inc()
        self.active.set(len(self.peers))


async def _finish(closing: asyncio.Task[None]) -> None:
    """Wait for a peer's close without letting the waiter's cancellation cut it short.

    The close task is shared by everyone who asks; cancelled halfway it would leave the connection
    open, never reach ``_on_closed`` and hold a ``max_peers`` slot for good.
    """
    await asyncio.shield(closing)
