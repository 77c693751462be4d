"""Our XMem implementation: network, checkpoint loader, memory, inference core, tracker."""

from backend.tracker.xmem.checkpoint import CheckpointError, load_network
from backend.tracker.xmem.config import XMemConfig, XMemDims
from backend.tracker.xmem.core import XMemCore
from backend.tracker.xmem.network import XMemNetwork
from backend.tracker.xmem.tracker import XMemSession, XMemTracker

__all__ = [
    "CheckpointError",
    "XMemConfig",
    "XMemCore",
    "XMemDims",
    "XMemNetwork",
    "XMemSession",
    "XMemTracker",
    "load_network",
]
