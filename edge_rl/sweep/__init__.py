"""Sweeps: SWEEP.toml as a fixed list of trials (spec), one trial's pipeline of CLI steps (pipeline),
and their scheduling on Ray Tune with retries, resuming and the best bundles (runner). Training box only."""
