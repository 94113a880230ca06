"""`cutover config check|show|schema`."""

from __future__ import annotations

import json

import typer

from config import Settings, masked_dump
from config.reference import reference_markdown
from controller.cli.common import (
    ConfigOption,
    Exit,
    JsonOption,
    err,
    fail,
    out,
    print_json,
    settings_or_exit,
    styled,
)

app = typer.Typer(help="Check, show and describe the configuration.", no_args_is_help=True)


@app.command()
def check(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Validate the config: exit 0 when usable, 2 naming every bad field otherwise."""
    if config is None:
        fail("no config file to check: pass --config FILE or set CUTOVER_CONFIG", Exit.USAGE)
    settings = settings_or_exit(config)
    if as_json:
        print_json({"ok": True, "service": settings.service})
        return
    jobs = [f"sync {settings.sync.mode.value}"]
    jobs.append(f"switchover {settings.switchover.method.value}" if settings.switchover
                else "no switchover (no [switchover] section)")
    if settings.traffic:
        stages = " -> ".join(
            (f"{s.match.header}: {s.match.value}" if s.match else f"{s.weight} %")
            + ("" if s.gate == "none" else f" [gate: {s.gate}]") for s in settings.traffic.stages)
        if settings.traffic.sticky is not None:
            stages += ", sticky"
        jobs.append(f"traffic {settings.traffic.driver.value} ({stages})")
    else:
        jobs.append("no traffic shifting (no [traffic] section)")
    out.print(f"config ok: service {settings.service!r}: {', '.join(jobs)}, "
              f"{len(settings.slo)} SLO check(s)")
    if settings.metrics.enabled and (warning := settings.metrics.exposure_warning()) is not None:
        err.print(styled(("warning:", "bold yellow"), f" {warning}"))


@app.command()
def show(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Print the effective config (file + environment + secrets), secrets masked."""
    data = masked_dump(settings_or_exit(config))
    if as_json:
        print_json(data)
    else:
        out.print_json(json.dumps(data))


@app.command()
def schema() -> None:
    """Print the JSON Schema of the config file (every setting, its type and meaning)."""
    print_json(Settings.model_json_schema())


@app.command()
def reference() -> None:
    """Print the configuration reference as Markdown (docs/config.md)."""
    typer.echo(reference_markdown(), nl=False)
