"""Speech-to-text service: faster-whisper behind the SttEngine protocol, on the shared runtime.

``audio`` decodes and validates input, ``model_store`` finds or assembles the model,
``whisper_engine`` adapts faster-whisper, ``service`` declares the handlers, and
``openai_routes`` adds OpenAI's /v1/audio/transcriptions.
"""
