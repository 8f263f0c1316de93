"""``python -m services.tts`` (launched by main) or ``python -m services.tts --standalone``."""

from services.runtime import exit_now, service_main
from services.tts.service import TtsService

exit_now(service_main("tts", TtsService))
