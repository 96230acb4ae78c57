"""Wire protocol and links (serial, MQTT, sim, replay) between the daemon and the hardware.

This package never imports `edge_rl`: the firmware side of the protocol must stand alone.
"""
