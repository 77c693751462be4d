"""Mask propagation through a video (weights-free classical and XMem)."""

from backend.tracker.base import TrackedFrame, Tracker, TrackerSession

__all__ = ["TrackedFrame", "Tracker", "TrackerSession"]
