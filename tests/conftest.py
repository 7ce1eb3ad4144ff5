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


@pytest.fixture(scope="session")
def leak_run():
    """The demo's two simulated weeks of Net3 with the default leak (seed 7); simulated once per session."""
    from training.water_zone import simulate_zone

    return simulate_zone(seed=7, progress=False)


@pytest.fixture(scope="session")
def leak_free_run():
    """The same two weeks and demands without the leak."""
    from training.water_zone import simulate_zone

    return simulate_zone(seed=7, leak=None, progress=False)
