"""`edge-rl run`: the device daemon that acts from a verified bundle, learns in a shadow and keeps its state.

One responsibility per module: `config` (the TOML schema, reloaded atomically), `source` (where the
bundle comes from, verified at start and at reload), `guard` (observation validation, the action
shield, the reward envelope), `shadow` (the stream Q(lambda) learner that watches but never acts),
`evidence` (episode statistics and the drift test), `gate` (trials, promotion, probation, rollback),
`checkpoint` (atomic generations on disk), `snapshot` (the payload and its writer thread), `state`
(what a restart resumes), `events` (the JSON-lines log), `interval` and `operator` (telemetry
samples, the retained status, operator commands), `service` (sd_notify, signals), `loop`
(receive, validate, act, send, then learn, gate, checkpoint, report) and `start` (the order of it all).
"""
