"""Private Mosquitto, InfluxDB and VictoriaMetrics on free loopback ports, for ``make demo`` and the tests only.

Never used by a gateway or a production bridge: those talk to the services an
operator runs.
"""
