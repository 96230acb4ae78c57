"""`edge-rl monitor`: the fleet's telemetry, live in a terminal table or a browser, recorded, plotted, exported.

`fleet` (pure state: presence, newest figures, curves, events, de-duplication and gaps), `view`
(the table's cells and sparklines), `grid` (the fast table renderable), `web` and `webpage` (the
browser view over server-sent events), `plot` (learning curves with event markers), `record`
(JSON lines out and back in), `prometheus` (metrics at scrape time), `subscribe` (the paho client
thread), `live` (the loop joining them) and `simulate` (a simulated fleet, to try and load it).
For scripts: `record.load(path)` rebuilds a Fleet from a recorded session and `Fleet.summary(now)`
returns its figures as plain data.
"""
