"""Language-model service: llama.cpp, an OpenAI-compatible API or vLLM behind one LlmEngine protocol.

``messages`` validates requests, ``engine`` is the protocol every adapter implements,
``llama_engine`` / ``openai_engine`` / ``vllm_engine`` are the adapters (``model_store`` finds or
assembles the GGUF), ``admission`` is the bounded line in front of the engine, ``service``
declares Generate and ListModels, and ``openai_routes`` adds /v1/chat/completions and /v1/models.
"""
