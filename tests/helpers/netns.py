"""A loopback-only network namespace for tests that gather network candidates (WebRTC/ICE).

ICE offers a candidate for every interface the process can see, and test traffic may go to
loopback only. :func:`loopback_netns` creates a fresh namespace with nothing but ``lo`` (up),
moves the *calling thread* into it with ``setns(2)`` and moves it back afterwards. Everything
that thread creates inside the block lives in the namespace: sockets, and child processes
(main, a browser, a WebRTC client script), which inherit the namespace of the thread that
forked them. Threads started earlier (gRPC's pollers, for instance) stay where they were, so
create servers and clients inside the block.

Needs root (CAP_SYS_ADMIN) and ``ip`` from iproute2; :func:`netns_unavailable` says why not,
for a skip message. Everything the test needs must be installed before entering: the
namespace has no route to anywhere.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator

CLONE_NEWNET = 0x40000000


def netns_unavailable() -> str:
    """Why a loopback namespace can't be made here ("" when it can)."""
    if os.geteuid() != 0:
        return "loopback network namespaces need root (ip netns add); run the tests as root as CI does"
    if shutil.which("ip") is None:
        return "'ip' (iproute2) is missing; apt-get install iproute2"
    return ""


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns(CLONE_NEWNET) failed: {os.strerror(err)}")


@contextlib.contextmanager
def loopback_netns(prefix: str = "uvtest") -> Iterator[str]:
    """Run the block in a new namespace with only ``lo`` up; yields its name; removed afterwards."""
    if why := netns_unavailable():
        raise RuntimeError(why)
    name = f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, capture_output=True)
        home = os.open(f"/proc/{os.getpid()}/task/{ctypes.CDLL(None).gettid()}/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{name}", os.O_RDONLY)
        try:
            _setns(target)
            try:
                yield name
            finally:
                _setns(home)
        finally:
            os.close(target)
            os.close(home)
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False, capture_output=True)


def interfaces() -> list[str]:
    """Names of the interfaces the calling thread sees (checks that a namespace is loopback-only)."""
    return sorted(name for _, name in socket.if_nameindex())
