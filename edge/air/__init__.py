"""Air-quality computations shared by the gateway and training: humidity correction, EAQI bands, physical limits."""
