"""Sweeps: SWEEP.toml as a fixed list of trials (spec), one trial's pipeline of CLI steps (pipeline),
their scheduling on Ray Tune with retries, resuming and the best bundles (runner), and reading the
results back as statistics (results) and figures (plots) for `edge-rl report`. Training box only."""
