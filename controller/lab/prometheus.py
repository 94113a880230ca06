"""The lab's Prometheus, scraping the app servers every second."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from controller.lab.processes import Proc, RunAs, find_binary, spawn


def write_config(root: Path, targets: Sequence[int], run_as: RunAs | None) -> Path:
    cfg = root / "prometheus.yml"
    listed = ", ".join(f"'127.0.0.1:{p}'" for p in targets)
    cfg.write_text(f"""# written by cutover lab
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: lab-apps
    static_configs:
      - targets: [{listed}]
""")
    data = root / "prometheus-data"
    data.mkdir(exist_ok=True)
    if run_as:
        run_as.chown(cfg)
        run_as.chown(data)
    return cfg


def start(root: Path, port: int, log: Path, run_as: RunAs | None) -> Proc:
    return spawn([find_binary("prometheus"), f"--config.file={root / 'prometheus.yml'}",
                  f"--storage.tsdb.path={root / 'prometheus-data'}",
                  f"--web.listen-address=127.0.0.1:{port}",
                  "--storage.tsdb.retention.time=1d"], log, run_as, cwd=root)
