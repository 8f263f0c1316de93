"""Speech-to-text service: faster-whisper behind the SttEngine protocol, Silero VAD, on the shared runtime.

``audio`` decodes and validates input, ``model_store`` finds or assembles the model,
``whisper_engine`` adapts faster-whisper, ``vad`` runs Silero on onnxruntime and ``segmenter``
cuts its frame scores into utterances, ``streaming`` runs one StreamingRecognize stream,
``detect`` serves DetectSpeech and /detect, ``service`` declares the handlers, and
``openai_routes`` adds OpenAI's /v1/audio/transcriptions.
"""
