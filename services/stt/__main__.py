"""``python -m services.stt`` (launched by main) or ``python -m services.stt --standalone``."""

from services.runtime import exit_now, service_main
from services.stt.service import SttService

exit_now(service_main("stt", SttService))
