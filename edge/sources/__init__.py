"""Where Readings come from: live drivers and recorded or simulated data."""

from edge.sources.replay import ReplaySource

__all__ = ["ReplaySource"]
