"""`edge-rl monitor`: the fleet's telemetry, live in a terminal table, recorded, plotted and exported to Prometheus."""
