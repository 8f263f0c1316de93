"""``python -m services.stt`` (launched by main) or ``python -m services.stt --standalone``."""

from services.runtime import service_main
from services.stt.service import SttService

raise SystemExit(service_main("stt", SttService))
