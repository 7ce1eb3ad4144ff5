"""frugalsense's gateway side: the gateway service, the bridge, the tools and their config (docs/architecture.md)."""
