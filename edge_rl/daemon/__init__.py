"""`edge-rl run`: the device daemon that acts from a verified bundle, learns in a shadow and keeps its state.

Modules, one responsibility each: `config` (the TOML schema, reloaded atomically), `guard`
(observation validation and the action shield: masks, bounds, slew), `shadow` (the stream
Q(lambda) learner that watches but never acts), `gate` (promotion, drift and rollback),
`checkpoint` (atomic generations on disk), `service` (sd_notify, signals), `events` (the JSON-lines
event log) and `loop` (receive, validate, act, send, then learn, gate, checkpoint, report).
"""
