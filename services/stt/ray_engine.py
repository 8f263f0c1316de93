"""STT engine ``ray-serve``: the Whisper decode runs on the cluster's STT deployment.

The local STT service keeps everything live (the bidirectional stream, Silero VAD, the turn
model, speculation); only the decodes (partials and finals) go to Ray Serve's gRPC proxy as
``Transcribe`` calls with the ``application`` metadata. Scaling the STT deployment scales the
decodes of every voice session. The engine is synchronous like the others: the service calls
it from its worker threads, each call is one blocking gRPC call.
"""

from __future__ import annotations

import logging
import time

import grpc
import numpy as np

from core.errors import error_from_code
from services.stt.engine import DecodeOptions, ModelLoadError, SegmentResult, Transcript
from services.stt.options import SttOptions
from uvpb import common_pb2, stt_pb2

log = logging.getLogger("ultravox.stt.ray")
TRANSCRIBE = "/ultravox.v1.SpeechToText/Transcribe"
CALL_TIMEOUT_S = 120.0
LANGUAGES = frozenset((
    "en", "zh", "de", "es", "ru", "ko", "fr", "ja", "pt", "tr", "pl", "ca", "nl", "ar", "sv", "it", "id",
    "hi", "fi", "vi", "he", "uk", "el", "ms", "cs", "ro", "da", "hu", "ta", "no", "th", "ur", "hr", "bg",
    "lt", "la", "mi", "ml", "cy", "sk", "te", "fa", "lv", "bn", "sr", "az", "sl", "kn", "et", "mk", "br",
    "eu", "is", "hy", "ne", "mn", "bs", "kk", "sq", "sw", "gl", "mr", "pa", "si", "km", "sn", "yo", "so",
    "af", "oc", "ka", "be", "tg", "sd", "gu", "am", "yi", "lo", "uz", "fo", "ht", "ps", "tk", "nn", "mt",
    "sa", "lb", "my", "bo", "tl", "mg", "as", "tt", "haw", "ln", "ha", "ba", "jw", "su", "yue",
))
"""Whisper's multilingual codes: the cluster's model decides, refusals come back from it."""


class RayServeEngine:
    """An STT engine whose model lives on a Ray Serve deployment."""

    def __init__(self, options: SttOptions, device: str, download_root: str) -> None:
        self.options = options
        self.address, self.application = options.cluster_address, options.cluster_application
        self.token = ""
        """The run's internal token (set by the service): the deployment checks it like a service."""
        self._channel: grpc.Channel | None = None
        self._call: grpc.UnaryUnaryMultiCallable | None = None
        self._loading = False

    def load(self, model_ref: str) -> None:
        """Connect to Serve's gRPC proxy and wait until the STT application answers (the cluster
        service may still be deploying it)."""
        if not self.address:
            raise ModelLoadError("engine ray-serve needs options.cluster_address (Serve's gRPC proxy, host:port)")
        self._channel = grpc.insecure_channel(self.address, options=[
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ])
        self._call = self._channel.unary_unary(
            TRANSCRIBE, request_serializer=stt_pb2.TranscribeRequest.SerializeToString,
            response_deserializer=stt_pb2.TranscribeResponse.FromString,
        )
        silence = np.zeros(1600, dtype=np.float32)
        deadline = time.monotonic() + self.options.cluster_wait_s
        last = ""
        self._loading = True
        try:
            while time.monotonic() < deadline:
                try:
                    self.transcribe(silence, DecodeOptions(language="en", beam_size=1, initial_prompt=None))
                    log.info("the cluster's STT application %r answers at %s", self.application, self.address)
                    return
                except grpc.RpcError as e:
                    last = f"{e.code().name}: {e.details()}"
                    time.sleep(1.0)
        finally:
            self._loading = False
        raise ModelLoadError(
            f"the cluster's STT application {self.application!r} at {self.address} did not answer within "
            f"{self.options.cluster_wait_s:.0f} s (last: {last}); is the cluster service up (./sm list)?"
        )

    def languages(self) -> frozenset[str]:
        return LANGUAGES

    def transcribe(self, samples: np.ndarray, options: DecodeOptions) -> Transcript:
        assert self._call is not None, "load() first"
        pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        request = stt_pb2.TranscribeRequest(
            audio=common_pb2.Audio(data=pcm, encoding=common_pb2.PCM_S16LE, sample_rate=16000, channels=1),
            language=options.language or "auto", beam_size=options.beam_size,
            initial_prompt=options.initial_prompt or "",
        )
        metadata = (("application", self.application), ("x-internal-token", self.token))
        try:
            r = self._call(request, timeout=CALL_TIMEOUT_S, metadata=metadata)
        except grpc.RpcError as e:
            if self._loading:
                raise
            code = e.code().name
            raise error_from_code(code, f"the cluster's STT: {e.details()}") from e
        return Transcript(
            text=r.text,
            segments=tuple(SegmentResult(s.start_s, s.end_s, s.text, s.avg_logprob, s.no_speech_prob)
                           for s in r.segments),
            language=r.language, language_probability=r.language_probability,
        )

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
