"""``python -m services.tts`` (launched by main) or ``python -m services.tts --standalone``."""

from services.runtime import service_main
from services.tts.service import TtsService

raise SystemExit(service_main("tts", TtsService))
