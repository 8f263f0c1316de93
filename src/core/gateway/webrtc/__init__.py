"""WebRTC transport of the voice conversation (docs/webrtc.md): aiortc peers, their audio and events.

The routes (``core.gateway.routes.webrtc``) use :class:`PeerRegistry` and the signalling
parsers; everything else here is private to the package.
"""

from core.gateway.webrtc.registry import PeerRegistry
from core.gateway.webrtc.signalling import CANDIDATES_SCHEMA, OFFER_SCHEMA, parse_candidates, parse_offer

__all__ = ["CANDIDATES_SCHEMA", "OFFER_SCHEMA", "PeerRegistry", "parse_candidates", "parse_offer"]
