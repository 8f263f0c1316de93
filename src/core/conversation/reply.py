"""The reply half of a turn: LLM token stream -> speakable chunks -> TTS, all at once.

Tokens go to the client as ``llm_text`` deltas the moment they arrive; each chunk the chunker
cuts goes to TTS while the LLM keeps generating. Failures degrade instead of failing the turn:
an LLM that fails (before or during the reply) or says nothing is replaced by the agent's
spoken ``fallback_phrase``; a TTS failure leaves the reply as text plus an ``error`` event.
Every failure is logged with its cause and noted on the turn (``degraded`` = the stage).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping

from core.conversation.chunker import SpeakableChunker
from core.conversation.speech import SpeechOutput
from core.conversation.turn import Turn, describe
from core.conversation.types import Session
from core.errors import CallError
from core.managers.hub import CommunicationManager
from uvpb import llm_pb2, tts_pb2

LLM_DEADLINE_S = 120.0
PHRASE_DEADLINE_S = 20.0
MAX_CACHED_PHRASES = 64


class ReplyPipeline:
    def __init__(
        self, hub: CommunicationManager, services: Mapping[str, str], log: logging.Logger, *,
        first_min_words: int = 3, keep_audio: bool = False,
    ) -> None:
        """``keep_audio``: keep each reply's audio on its turn (recordings are on)."""
        self.hub, self.log, self.first_min_words, self.keep_audio = hub, log, first_min_words, keep_audio
        self.llm, self.tts = services["llm"], services["tts"]
        self._phrases: dict[tuple[str, str, str, int, str], bytes] = {}

    def speech_for(self, turn: Turn) -> SpeechOutput:
        agent = turn.session.agent
        turn.speech = SpeechOutput(
            self.hub, self.tts, turn.sink, turn.report, voice=turn.session.voice or agent.voice,
            engine=agent.tts_engine, language=turn.session.language or agent.language, out_rate=turn.out_rate,
            log=self.log, metadata={"x-request-id": turn.turn_id}, keep_audio=self.keep_audio,
        )
        return turn.speech

    async def reply(self, turn: Turn, request: llm_pb2.GenerateRequest) -> None:
        """Generate and speak the reply to ``request``; returns once all its audio is sent."""
        speech = self.speech_for(turn)
        chunker = SpeakableChunker(first_min_words=self.first_min_words)
        try:
            await self._generate(turn, request, chunker, speech)
        except Exception as e:  # any LLM failure becomes the spoken fallback
            self.log.error(
                "LLM failed after %d chars of reply: %s; speaking the fallback phrase", len(turn.reply_text),
                describe(e), exc_info=not isinstance(e, CallError),
            )
            turn.degrade("llm", e)
            turn.reply_text = speech.queued_text()  # what was cut off unsaid is not part of the reply
        else:
            for chunk in chunker.flush():
                self._say(turn, speech, chunk)
            if not turn.reply_text.strip():
                self.log.error("LLM returned an empty reply; speaking the fallback phrase")
                turn.degrade("llm", "the LLM returned an empty reply")
        if turn.degraded == "llm":
            await self._phrase_into(turn, speech, turn.session.agent.fallback_phrase)
        await self._finish(turn, speech)

    async def phrase(self, turn: Turn, text: str) -> None:
        """Speak a fixed phrase as the whole reply (the not-heard or fallback phrase)."""
        speech = self.speech_for(turn)
        await self._phrase_into(turn, speech, text)
        await self._finish(turn, speech)

    async def cached_phrase(self, session: Session, text: str, out_rate: int) -> bytes:
        """``text`` in the session's voice as PCM16 at ``out_rate``, synthesized once and then kept.

        For phrases spoken outside a turn (the busy phrase of a refused turn), where nothing may queue.
        """
        agent = session.agent
        voice, language = session.voice or agent.voice, session.language or agent.language
        key = (voice, agent.tts_engine, language, out_rate, text)
        if (pcm := self._phrases.get(key)) is not None:
            return pcm
        request = tts_pb2.SynthesizeRequest(
            text=text, voice=voice, language=language, engine=agent.tts_engine, format="pcm", sample_rate=out_rate
        )
        audio = bytearray()
        stream = self.hub.stream(self.tts, "SynthesizeStream", request, deadline_s=PHRASE_DEADLINE_S)
        async with contextlib.aclosing(stream) as pieces:
            async for piece in pieces:
                assert isinstance(piece, tts_pb2.SynthesisChunk)
                audio += piece.audio
        if len(self._phrases) >= MAX_CACHED_PHRASES:
            self._phrases.pop(next(iter(self._phrases)))
        self._phrases[key] = pcm = bytes(audio)
        return pcm

    async def _generate(
        self, turn: Turn, request: llm_pb2.GenerateRequest, chunker: SpeakableChunker, speech: SpeechOutput
    ) -> None:
        stream = self.hub.stream(
            self.llm, "Generate", request, deadline_s=LLM_DEADLINE_S, metadata={"x-request-id": turn.turn_id}
        )
        async with contextlib.aclosing(stream) as tokens:
            async for msg in tokens:
                assert isinstance(msg, llm_pb2.GenerateChunk)
                if not msg.delta:
                    continue
                turn.report.mark("llm_first_token")
                turn.reply_text += msg.delta
                await turn.sink.send_event({"type": "llm_text", "delta": msg.delta})
                for chunk in chunker.feed(msg.delta):
                    self._say(turn, speech, chunk)

    @staticmethod
    def _say(turn: Turn, speech: SpeechOutput, chunk: str) -> None:
        turn.report.mark("first_chunk_text")
        speech.say(chunk)

    async def _phrase_into(self, turn: Turn, speech: SpeechOutput, text: str) -> None:
        delta = turn.add_reply(text)
        await turn.sink.send_event({"type": "llm_text", "delta": delta})
        self._say(turn, speech, text)

    async def _finish(self, turn: Turn, speech: SpeechOutput) -> None:
        await speech.finish()
        if speech.error is not None:
            turn.degrade("tts", speech.error)
