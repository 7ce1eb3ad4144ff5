"""Streaming detectors: Readings in, Detections and Alerts out."""

from edge.detectors.night_flow import MinimumNightFlowDetector

__all__ = ["MinimumNightFlowDetector"]
