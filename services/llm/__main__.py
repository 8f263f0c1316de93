"""``python -m services.llm`` (launched by main) or ``python -m services.llm --standalone``."""

from services.llm.service import LlmService
from services.runtime import exit_now, service_main

exit_now(service_main("llm", LlmService))
