"""The lab's nginx: a second, different balancer in front of the same app servers, its upstream
block in a file of its own that the nginx traffic driver rewrites and reloads.

It runs as the invoking user (root in CI): nginx then drops its workers to `nobody` itself, and
`nginx -t` / `nginx -s reload` run by Cutover act on files that user owns.
"""

from __future__ import annotations

from pathlib import Path

from config.traffic import NginxSettings
from controller.lab.processes import Proc, find_binary, run, spawn
from controller.traffic.nginx import NginxBalancer

UPSTREAM = "app"
STICKY_UPSTREAM = "app_sticky"
"""The same servers behind a second server block, clients kept on their colour by a cookie."""
STICKY_COOKIE = "cutover_colour"


def prefix(root: Path) -> Path:
    return root / "nginx"


def upstream_file(root: Path, sticky: bool = False) -> Path:
    return prefix(root) / ("upstream-sticky.conf" if sticky else "upstream.conf")


def base_argv(root: Path) -> list[str]:
    p = prefix(root)
    return [find_binary("nginx"), "-p", f"{p}/", "-c", str(p / "nginx.conf"),
            "-e", str(root / "logs" / "nginx-error.log")]


def settings(root: Path, servers: dict[str, int], sticky: bool = False) -> NginxSettings:
    """The traffic driver's settings for this lab (servers: name -> port), for its plain
    upstream or its sticky one."""
    return NginxSettings(upstream_file=upstream_file(root, sticky),
                         upstream=STICKY_UPSTREAM if sticky else UPSTREAM,
                         servers={s: f"127.0.0.1:{port}" for s, port in servers.items()},
                         directives=["keepalive 32"],
                         test_command=[*base_argv(root), "-t"],
                         reload_command=[*base_argv(root), "-s", "reload"])


def write_config(root: Path, ports: tuple[int, int], drivers: tuple[NginxSettings, NginxSettings],
                 blue: list[str], green: list[str]) -> None:
    """ports and drivers: the plain server block's and the sticky one's."""
    p = prefix(root)
    (p / "tmp").mkdir(parents=True, exist_ok=True)
    driver, sticky = drivers
    for d, cookie in ((driver, None), (sticky, STICKY_COOKIE)):
        if not d.upstream_file.exists():  # 100 % blue, in the driver's own format
            d.upstream_file.write_text(NginxBalancer(d, blue, green, sticky_cookie=cookie).render(0))
    temp = "\n".join(f"    {kind}_temp_path {p / 'tmp' / kind};"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (p / "nginx.conf").write_text(f"""# written by cutover lab
daemon off;
worker_processes 1;
pid {p / 'nginx.pid'};
events {{
    worker_connections 2048;
}}
http {{
    access_log off;
{temp}
    include {driver.upstream_file};
    include {sticky.upstream_file};
    server {{
        listen 127.0.0.1:{ports[0]};
        location / {{
            proxy_pass http://{UPSTREAM};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
        }}
    }}
    server {{
        listen 127.0.0.1:{ports[1]};
        location / {{
            proxy_pass http://$cutover_{STICKY_UPSTREAM};
            add_header Set-Cookie $cutover_{STICKY_UPSTREAM}_cookie always;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
        }}
    }}
}}
""")
    run([*base_argv(root), "-t"], None)


def start(root: Path, log: Path) -> Proc:
    return spawn(base_argv(root), log, None, cwd=root)
