"""`switch` in a process of its own that SIGKILLs itself at the start of one step, for the
fault matrix (tests.faultmatrix): reads {"settings", "to", "step"} as JSON on stdin, prints
"killing" just before it dies, or "done" if the step never came."""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

from config.settings import Settings
from sync.switch import switch


def main() -> int:
    spec = json.loads(sys.stdin.readline())
    step = f"{spec['step']}: start"

    def record(name: str, _: dict[str, Any]) -> None:
        if name == step:
            print("killing", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
    try:
        switch(Settings.model_validate(spec["settings"]), spec["to"], record=record)
    except Exception as exc:
        print(f"failed: {exc}", flush=True)
        return 1
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
