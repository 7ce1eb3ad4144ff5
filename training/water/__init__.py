"""Water networks for training: the simulated zone, EPANET leaks, demand, the scenario sets and sensor placement."""
