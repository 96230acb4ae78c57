"""Telemetry: the daemon's samples and events over MQTT, through a disk outbox, and the commands it takes.

`schema` (topics, fields, commands: the one wire format both ends read), `settings` (where to and
how to authenticate, checked at start), `outbox` (messages on disk before they are published,
bounded, replayed in order), `process` (CPU, memory, plain JSON) and `publish` (the MQTT client
thread the control loop hands messages to without waiting).
"""
