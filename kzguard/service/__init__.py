"""The long-running service: core (no bus), daemon, metrics, D-Bus."""
