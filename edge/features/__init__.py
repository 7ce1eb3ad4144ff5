"""Feature functions shared by the gateway detectors and by training/evaluation."""

from edge.features.night_flow import minimum_night_flow, night_mnf, night_window, zone_inflow

__all__ = ["minimum_night_flow", "night_mnf", "night_window", "zone_inflow"]
