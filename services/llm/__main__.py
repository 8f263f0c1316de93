"""``python -m services.llm`` (launched by main) or ``python -m services.llm --standalone``."""

from services.llm.service import LlmService
from services.runtime import service_main

raise SystemExit(service_main("llm", LlmService))
