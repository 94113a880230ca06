"""SLO judgement: metric sources measure blue and green, and a pure judge turns measurements
into verdicts. What a breach does is the daemon's (controller/daemon/watch.py, rollback.py)."""
