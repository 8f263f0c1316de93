"""Text-to-speech service: Kokoro-82M (ONNX) and Piper behind the TtsEngine protocol, on the shared runtime.

``text_split`` cuts text into speakable pieces, ``engine`` declares the engine protocol with the
``kokoro_engine`` and ``piper_engine`` adapters, ``requests`` validates a request into a plan,
``audio`` resamples and encodes, ``synth`` runs the pieces on worker threads, ``service``
declares the handlers and ``openai_routes`` adds OpenAI's /v1/audio/speech and /v1/audio/voices.
"""
