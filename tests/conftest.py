"""Shared pytest fixtures: real local services (no mocks of broker or database)."""
from __future__ import annotations

import pytest

from gateway.localservices import LocalServices


@pytest.fixture(scope="session")
def services(tmp_path_factory):
    """Mosquitto + InfluxDB on free loopback ports, shared by the whole session.

    Tests that stop or restart a service must start it again before they end.
    """
    with LocalServices(tmp_path_factory.mktemp("services")) as running:
        yield running


@pytest.fixture(scope="session")
def vm_services(tmp_path_factory):
    """VictoriaMetrics alone (tests that also need MQTT or InfluxDB take ``services`` too)."""
    with LocalServices(tmp_path_factory.mktemp("vm_services"), mosquitto=False, influxdb=False,
                       victoriametrics=True) as running:
        yield running
