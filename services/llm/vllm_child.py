"""``python -m services.llm.vllm_child PARENT_PID -- CMD...``: runs vLLM's server, dies with the LLM service.

The LLM service starts this in a new session (its own process group) so one ``killpg`` stops
vLLM and every worker it forks. If the LLM service itself is killed (SIGKILL, OOM) nothing
would stop vLLM, which would keep the GPU's memory; so this watcher polls its parent and, once
the parent is gone, terminates the group. SIGTERM/SIGINT are passed on to vLLM.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from types import FrameType

POLL_S = 0.5
GRACE_S = 10.0


def _stop(child: subprocess.Popen[bytes], grace_s: float) -> int:
    """Stop vLLM (SIGTERM, then SIGKILL), then sweep the group: its workers and this watcher."""
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(grace_s)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    os.killpg(os.getpgrp(), signal.SIGKILL)
    return 128 + signal.SIGKILL  # not reached: the sweep ends this process too


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        sys.stderr.write("usage: python -m services.llm.vllm_child PARENT_PID -- CMD...\n")
        return 2
    parent, cmd = int(argv[0]), argv[2:]
    child = subprocess.Popen(cmd)

    def forward(signum: int, _frame: FrameType | None) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while True:
        try:
            return child.wait(POLL_S)
        except subprocess.TimeoutExpired:
            pass
        if os.getppid() != parent:
            sys.stderr.write(f"vllm_child: parent {parent} is gone; stopping vLLM\n")
            return _stop(child, GRACE_S)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
