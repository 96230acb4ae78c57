"""`edge-rl monitor`: the fleet's telemetry, live in a terminal table, recorded, plotted and exported to Prometheus.

`fleet` (pure state: presence, newest figures, curves, events, de-duplication and gaps), `view`
(the rich table and sparklines), `plot` (learning curves with event markers), `record` (JSON
lines out and back in), `prometheus` (metrics at scrape time), `subscribe` (the paho client
thread) and `live` (the loop joining them). For scripts: `record.load(path)` rebuilds a Fleet
from a recorded session and `Fleet.summary(now)` returns its figures as plain data.
"""
