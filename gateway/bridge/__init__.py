"""The bridge, the process ``frugalsense bridge`` starts next to the broker: MQTT in, InfluxDB out.

``service`` subscribes and acknowledges a message only once its points are written;
``influx_points`` turns payloads into line protocol; ``influx_writer`` and
``influx_v2`` write it to InfluxDB 1.x (``/write``) or 1.8+/2.x/3.x (``/api/v2/write``);
``metrics`` serves the bridge's Prometheus metrics and ``/healthz`` (``--metrics-port``).
"""
