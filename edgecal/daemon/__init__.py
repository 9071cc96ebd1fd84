"""The long-running calibration service and its systemd integration."""
