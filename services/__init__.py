"""Model services: one process per role (STT now; TTS and LLM later), each in its own venv.

``services.runtime`` is the shared runtime (gRPC + HTTP servers, health, auth, metrics,
graceful stop); ``services.<role>`` declares the role's handlers and its engine adapters.
"""
