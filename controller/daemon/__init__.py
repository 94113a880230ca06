"""The controller daemon: its loop, the phase decisions, the jobs they start, the SLO watch,
rollback, hooks, notifications, metrics and systemd notification."""
