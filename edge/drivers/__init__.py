"""Serial sensor drivers, one module each. ``DRIVERS``: the devices that stream frames or lines (read by
``edge/sources/serial_source.py``), by their config ``driver:`` name; Modbus RTU is polled by its own source."""

from edge.drivers import line_node, pms5003, sds011
from edge.drivers.base import Driver

DRIVERS: dict[str, Driver] = {d.name: d for d in (sds011.DRIVER, pms5003.DRIVER, line_node.DRIVER)}

__all__ = ["DRIVERS", "Driver"]
