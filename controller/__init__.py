"""Cutover's controller: the commands, the daemon, SLO judgement, traffic drivers, the report,
the state store and the lab."""

import logging

# httpx and httpcore log every request, with its URL, at INFO and DEBUG: a line per request
# would bury the breach lines, and a webhook's URL carries its token. Kept at WARNING for
# every command, whatever logging the caller sets up.
for _library in ("httpx", "httpcore"):
    logging.getLogger(_library).setLevel(logging.WARNING)
