"""A user's own shift command, e.g. the seed guides' `./scripts/traffic-shift.sh --target green
--percentage 10`: an argv template, never a shell string. Green's share N runs it with target
green and percentage N; 0 % runs it as the guides roll back, target blue and percentage 100."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence

from config.traffic import CommandDriverSettings
from controller.traffic.balancer import (
    BadTrafficInput,
    ShareBalancer,
    Split,
    TrafficError,
    share_split,
)
from sync.children import run_command

FIELDS = ("target", "percentage", "blue_weight", "green_weight")


def fill(template: Sequence[str], green_percent: int) -> list[str]:
    values = {"target": "green" if green_percent else "blue",
              "percentage": str(green_percent if green_percent else 100),
              "blue_weight": str(100 - green_percent), "green_weight": str(green_percent)}
    try:
        return [arg.format_map(values) for arg in template]
    except (KeyError, ValueError, IndexError) as exc:
        raise BadTrafficInput(f"traffic.command.argv: bad placeholder ({exc}); use "
                              + ", ".join("{" + f + "}" for f in FIELDS)) from None


class CommandBalancer(ShareBalancer):
    def __init__(self, settings: CommandDriverSettings) -> None:
        self.settings = settings
        fill(settings.argv, 0)  # placeholders checked before anything runs

    def describe(self) -> str:
        return f"command {self.settings.argv[0]}"

    def check(self) -> None:
        fill(self.settings.argv, 0)

    def apply(self, green_percent: int) -> None:
        self._run(fill(self.settings.argv, green_percent), "argv")

    def read(self) -> Split | None:
        if self.settings.readback is None:
            return None
        output = self._run(self.settings.readback, "readback").strip()
        m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*%?", output.splitlines()[-1].strip() if output else "")
        if not m or float(m.group(1)) > 100:
            raise TrafficError(f"traffic.command.readback printed {output[-200:]!r}; it must print "
                               "green's percentage (0-100) on its last line")
        green = float(m.group(1))
        return share_split(green)


    def _run(self, argv: Sequence[str], field: str) -> str:
        try:
            done = run_command(argv, self.settings.timeout)
        except FileNotFoundError:
            raise BadTrafficInput(f"traffic.command.{field}: {argv[0]!r} not found") from None
        except PermissionError:
            raise BadTrafficInput(f"traffic.command.{field}: {argv[0]!r} is not executable") from None
        except subprocess.TimeoutExpired:
            raise TrafficError(f"`{' '.join(argv)}` did not finish within "
                               f"{self.settings.timeout:.0f}s (traffic.command.timeout)") from None
        if done.returncode != 0:
            err = " | ".join((done.stderr or done.stdout).strip().splitlines()[-5:])
            raise TrafficError(f"`{' '.join(argv)}` exited {done.returncode}: {err or 'no output'}")
        return done.stdout
