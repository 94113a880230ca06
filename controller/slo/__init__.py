"""SLO watch: metric sources measure blue and green, a pure judge turns measurements into
verdicts, and the watcher rolls traffic back to blue on a breach."""
