"""The four context layers, passed explicitly (no module-level singletons).

    GlobalContext      one per run of the platform: settings, paths, run id, internal token
    └── ProcessContext one per OS process (main, or one service): its name, metrics registry, logger
        └── ServiceContext   inside a model service process: its config and bound ports
    StandaloneContext  builds the same chain for running one service without main
                       (``python -m services.stt --standalone``), e.g. for debugging or a remote host

Main creates the GlobalContext, and hands each service its part as one JSON env var
(``UV_LAUNCH_SPEC``), so a service never re-reads config files or guesses at its ports.
"""

from core.context.contexts import (
    LAUNCH_SPEC_ENV,
    GlobalContext,
    Paths,
    ProcessContext,
    ServiceContext,
    StandaloneContext,
)

__all__ = ["LAUNCH_SPEC_ENV", "GlobalContext", "Paths", "ProcessContext", "ServiceContext", "StandaloneContext"]
