"""WebSocket ``/ws/voice``: a spoken conversation over one socket (protocol: docs/websocket.md).

In: PCM16 16 kHz mono binary frames (an empty frame ends the utterance: push-to-talk) and JSON
control messages (config, text, interrupt, reset, end). Out: JSON events and PCM16 reply
audio at the rate the client chose. One :class:`VoiceSocket` per connection: the receive loop
checks frames and hands them to the :class:`VoiceEndpoint` it shares with WebRTC (feeding audio
never waits for the model services), and a writer task drains the connection's bounded
:class:`Outbox`. Bad input of any kind is an ``error``
event and the connection stays open; a client that stops reading entirely is disconnected.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from core.access import principal_of
from core.conversation.audio import container_kind
from core.conversation.outbox import Outbox
from core.errors import InvalidArgument
from core.gateway.runtime import MainRuntime
from core.gateway.voice_endpoint import VoiceEndpoint

router = APIRouter()
log = logging.getLogger("ultravox.main.ws")
CONFIG_GRACE_S = 1.0
"""A client that sends nothing this long after connecting gets a default session (and ``ready``)."""


@router.websocket("/ws/voice")
async def voice_ws(ws: WebSocket) -> None:
    """Keys, tokens (``?token=``), origins and rate limits were checked by the AccessGuard."""
    rt: MainRuntime = ws.app.state.runtime
    await ws.accept()
    await VoiceSocket(ws, rt).serve()


class VoiceSocket:
    """One /ws/voice connection: frames in, the :class:`Outbox` written out; the rest is the endpoint's."""

    def __init__(self, ws: WebSocket, rt: MainRuntime) -> None:
        self.ws, self.rt, self.cfg = ws, rt, rt.ctx.settings.conversation
        self.outbox = Outbox()
        self.endpoint = VoiceEndpoint(rt, self.outbox, by=principal_of(ws))

    async def serve(self) -> None:
        writer = asyncio.create_task(self._write(), name="ws-writer")
        grace = asyncio.create_task(self._default_after_grace(), name="ws-grace")
        watchdog = asyncio.create_task(self._hang_up_on_overflow(), name="ws-watchdog")
        try:
            while not self.endpoint.done:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                await self.endpoint.guard(self._handle(message))
        except (WebSocketDisconnect, RuntimeError):
            pass  # the client went away
        finally:
            grace.cancel()
            watchdog.cancel()
            try:
                await self.endpoint.close()
            finally:  # the writer and the socket go even when closing the conversation failed
                self.outbox.close()
                with contextlib.suppress(TimeoutError, Exception):
                    await asyncio.wait_for(writer, 5)
                writer.cancel()
                with contextlib.suppress(Exception):
                    await self.ws.close(code=1000)

    async def _handle(self, message: Mapping[str, Any]) -> None:
        if (data := message.get("bytes")) is not None:
            self._check_audio(data)
            await self.endpoint.audio(data)
        elif (text := message.get("text")) is not None:
            await self.endpoint.control(text)

    def _check_audio(self, data: bytes) -> None:
        limit = self.cfg.max_ws_frame_bytes
        if len(data) > limit:
            raise InvalidArgument(
                f"audio frame of {len(data)} bytes is over the {limit}-byte limit; send PCM16 16 kHz mono in "
                "frames of 20 to 100 ms (640 to 3200 bytes)"
            )
        if len(data) % 2:
            raise InvalidArgument(
                f"audio frame of {len(data)} bytes has an odd length: PCM16 needs 2 bytes per sample; the frame "
                "was dropped"
            )
        if what := container_kind(data):
            raise InvalidArgument(
                f"this frame starts like {what}: send raw PCM16 little-endian mono samples at 16 kHz with no "
                "header (decode the file first); the frame was dropped"
            )

    async def _default_after_grace(self) -> None:
        await asyncio.sleep(CONFIG_GRACE_S)
        if self.endpoint.conv is None and not self.endpoint.done:
            await self.endpoint.guard(self.endpoint.conversation())

    async def _hang_up_on_overflow(self) -> None:
        await self.outbox.overflowed.wait()
        log.warning("closing a /ws/voice client that stopped reading (%d events waiting)", self.outbox.max_events)
        with contextlib.suppress(Exception):
            await self.ws.close(code=1008, reason="client not reading; too many events waiting")

    async def _write(self) -> None:
        try:
            while (item := await self.outbox.get()) is not None:
                if isinstance(item, bytes):
                    await self.ws.send_bytes(item)
                else:
                    await self.ws.send_text(json.dumps(item, separators=(",", ":"), ensure_ascii=False))
        except Exception as e:  # the client went away mid-send
            log.debug("ws writer stopped: %s", e)
            self.outbox.close()
