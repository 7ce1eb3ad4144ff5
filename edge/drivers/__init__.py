"""Serial sensor drivers, one module each; ``DRIVERS`` maps a config's ``driver:`` name to its declaration."""
from edge.drivers import line_node, pms5003, sds011
from edge.drivers.base import Driver

DRIVERS: dict[str, Driver] = {d.name: d for d in (sds011.DRIVER, pms5003.DRIVER, line_node.DRIVER)}

__all__ = ["DRIVERS", "Driver"]
