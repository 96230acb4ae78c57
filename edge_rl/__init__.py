"""edge-rl: train compact Q-policies, compress and export them, run and adapt them on devices."""

__version__ = "0.1.0"
