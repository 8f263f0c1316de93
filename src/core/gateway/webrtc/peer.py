"""One WebRTC call: an aiortc peer connection bound to a voice conversation, from offer to cleanup.

:meth:`Peer.answer` applies the offer, opens the session (as a WebSocket ``config`` would),
adds the reply track and returns the answer with the server's candidates. Afterwards the peer
watches its connection and ends itself when the client is gone without saying so:

- ``connectionState`` failed -> ``ice_failed``; closed, the ``events`` channel closed, or ICE
  ``disconnected`` for ``disconnected_grace_s`` -> ``disconnected``;
- not connected ``connect_timeout_s`` after the answer -> ``timeout``.

:meth:`Peer.close` runs once whatever asks (DELETE, ``end``, a watcher, shutdown): the
microphone pump and control reader stop, the conversation closes (the reply in progress is
interrupted, the STT stream ends, the session stays in the store), queued events get a moment
to go out, then the tracks, transceivers and transports of the connection are closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Coroutine
from typing import Any, Literal

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtcdatachannel import RTCDataChannel

from core.access.principal import OPEN, Principal
from core.config.models import WebRtcConfig
from core.errors import InvalidArgument, ServiceUnavailable
from core.gateway.runtime import MainRuntime
from core.gateway.voice_endpoint import VoiceEndpoint
from core.gateway.webrtc.audio import TRACK_RATE, InboundAudio, PlayoutBuffer
from core.gateway.webrtc.signalling import Offer
from core.gateway.webrtc.sink import WebRtcSink
from core.gateway.webrtc.tracks import ReplyTrack, pump_microphone

log = logging.getLogger("ultravox.main.webrtc")
Reason = Literal["client_end", "ice_failed", "disconnected", "timeout", "shutdown"]
REASONS: tuple[Reason, ...] = ("client_end", "ice_failed", "disconnected", "timeout", "shutdown")
EVENTS_LABEL = "events"
MAX_WAITING_MESSAGES = 64
"""Control messages queued beyond this (a client flooding the channel) are dropped with an error."""
_OVERFLOW = object()
"""Queued once when the limit is hit, so the reader reports the overflow once (an empty binary message,
which a client can send, must not look like it)."""


def ice_servers(config: WebRtcConfig) -> list[RTCIceServer]:
    return [RTCIceServer(urls=s.urls, username=s.username, credential=s.credential) for s in config.ice_servers]


class Peer:
    def __init__(
        self, rt: MainRuntime, config: WebRtcConfig, on_closed: Callable[[Peer, Reason | None], None],
        *, by: Principal = OPEN,
    ) -> None:
        self.id = uuid.uuid4().hex
        self.config, self._on_closed = config, on_closed
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=ice_servers(config)))
        self.buffer, self.inbound = PlayoutBuffer(), InboundAudio()
        self.sink = WebRtcSink(self.buffer, self.inbound)
        self.track = ReplyTrack(self.buffer)
        self.endpoint = VoiceEndpoint(rt, self.sink, out_rate=TRACK_RATE, commit=True, name="webrtc", by=by)
        self.mic: MediaStreamTrack | None = None
        self.reason: Reason | None = None
        self._messages: asyncio.Queue[str | bytes | object] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self._grace: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self.pc.on("track", self._on_track)
        self.pc.on("datachannel", self._on_datachannel)
        self.pc.on("connectionstatechange", self._on_connection_state)
        self.pc.on("iceconnectionstatechange", self._on_ice_state)

    @property
    def session_id(self) -> str:
        return self.endpoint.conv.session.id if self.endpoint.conv is not None else ""

    @property
    def closed(self) -> bool:
        return self._closing is not None

    async def answer(self, offer: Offer) -> str:
        """The answer SDP (candidates included); InvalidArgument for an offer aiortc cannot take."""
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
        except (ValueError, KeyError, IndexError) as e:
            raise InvalidArgument(f"the offer's SDP was rejected ({type(e).__name__}: {e}); send the browser's "
                                  "own pc.localDescription.sdp unchanged") from e
        if self.mic is None:
            raise InvalidArgument("the offer's audio m-line carries no track: add the microphone with pc.addTrack")
        self.check_open()
        await self.endpoint.configure(offer.voice)
        self.check_open()
        self.pc.addTrack(self.track)
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        self.check_open()
        self._spawn(pump_microphone(self.mic, self.inbound, self._feed), "webrtc-mic")
        self._spawn(self._read_messages(), "webrtc-control")
        self._spawn(self._connect_deadline(), "webrtc-connect-timeout")
        self._spawn(self._hang_up_on_overflow(), "webrtc-watchdog")
        return str(self.pc.localDescription.sdp)

    def check_open(self) -> None:
        """Between the awaits of :meth:`answer`: a close that ran meanwhile (shutdown, the connection gone)
        ends the answer with 503 rather than half-building a call nobody will close again."""
        if self._closing is not None:
            raise ServiceUnavailable(
                f"the call ended while its offer was being answered ({self.reason or 'closed'}); send a new offer"
            )

    def close(self, reason: Reason | None) -> asyncio.Task[None]:
        """End the call (once; later calls get the same task). ``None``: never answered, not counted."""
        if self._closing is None:
            self.reason = reason
            self._closing = asyncio.create_task(self._close(), name=f"webrtc-close-{self.id[:8]}")
        return self._closing

    # ---- aiortc callbacks -----------------------------------------------------------------------

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio" and self.mic is None:
            self.mic = track

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label != EVENTS_LABEL:
            log.info("ignoring data channel %r (only %r is used)", channel.label, EVENTS_LABEL)
            return
        self.sink.attach(channel)
        channel.on("message", self._on_message)
        channel.on("close", lambda: self.close("disconnected"))

    def _on_message(self, message: str | bytes) -> None:
        if self._messages.qsize() < MAX_WAITING_MESSAGES:
            self._messages.put_nowait(message)
        elif self._messages.qsize() == MAX_WAITING_MESSAGES:
            self._messages.put_nowait(_OVERFLOW)

    def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        log.debug("peer %s connection %s", self.id[:8], state)
        if state == "connected":
            self._connected.set()
        elif state == "failed":
            self.close("ice_failed")
        elif state == "closed":
            self.close("disconnected")

    def _on_ice_state(self) -> None:
        state = self.pc.iceConnectionState
        if state == "disconnected" and self._grace is None:
            self._grace = self._spawn(self._disconnected_grace(), "webrtc-grace")
        elif state in ("connected", "completed") and self._grace is not None:
            self._grace.cancel()
            self._grace = None
        elif state == "failed":
            self.close("ice_failed")

    # ---- tasks ----------------------------------------------------------------------------------

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None] | None:
        """``work`` as a task of this call, cancelled by :meth:`close`; None (and not run) once closing,
        when nothing would cancel it any more."""
        if self._closing is not None:
            work.close()
            return None
        task = asyncio.create_task(work, name=f"{name}-{self.id[:8]}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _feed(self, pcm: bytes) -> None:
        if not self.endpoint.done:
            await self.endpoint.guard(self.endpoint.audio(pcm))

    async def _read_messages(self) -> None:
        while True:
            message = await self._messages.get()
            if isinstance(message, str):
                await self.endpoint.guard(self.endpoint.control(message))
            elif message is _OVERFLOW:
                await self.endpoint.error(
                    "RESOURCE_EXHAUSTED", f"more than {MAX_WAITING_MESSAGES} control messages were waiting; "
                    "later ones were dropped: send one at a time"
                )
            else:
                await self.endpoint.error(
                    "INVALID_ARGUMENT", "the events channel takes JSON text messages; audio goes on the audio track"
                )
            if self.endpoint.done:
                self.close("client_end")
                return

    async def _connect_deadline(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), self.config.connect_timeout_s)
            return
        log.info("peer %s did not connect within %.0f s; dropping it", self.id[:8], self.config.connect_timeout_s)
        self.close("timeout")

    async def _hang_up_on_overflow(self) -> None:
        await self.sink.outbox.overflowed.wait()
        log.warning("peer %s stopped reading its events channel; dropping it", self.id[:8])
        self.close("disconnected")

    async def _disconnected_grace(self) -> None:
        await asyncio.sleep(self.config.disconnected_grace_s)
        self.close("disconnected")

    async def _close(self) -> None:
        log.info("closing WebRTC peer %s (%s)", self.id[:8], self.reason or "not answered")
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await self.endpoint.close()
        except Exception as e:  # the rest of the cleanup must run
            log.exception("closing the conversation of peer %s failed: %s", self.id[:8], e)
        await self.sink.close()
        self.track.stop()
        if self.mic is not None:
            self.mic.stop()
        try:
            await self.pc.close()
        except Exception as e:
            log.exception("closing peer connection %s failed: %s", self.id[:8], e)
        self.pc.remove_all_listeners()
        self._on_closed(self, self.reason)
