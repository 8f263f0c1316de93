"""``python -m services.cluster`` (launched by main) or ``python -m services.cluster --standalone``."""

from services.cluster.service import ClusterService
from services.runtime import exit_now, service_main

exit_now(service_main("cluster", ClusterService))
