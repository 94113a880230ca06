"""Traffic shifting: the stages and the load-balancer driver."""

from __future__ import annotations

import ipaddress
import re
from enum import StrEnum
from itertools import pairwise
from typing import Annotated, Literal, Self

from pydantic import (
    AnyHttpUrl,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from config.base import (
    Argv,
    ConfigPath,
    HostPort,
    Name,
    Section,
    SqlText,
    TableName,
    argv_template,
    is_loopback,
    system_schema,
)
from config.dsn import dsn_without_secrets
from config.durations import Duration
from config.errors import FieldError

HeaderName = Annotated[str, Field(pattern=r"^[A-Za-z0-9-]{1,64}$")]
"""An HTTP header's name (letters, digits and '-')."""


def ip_port(address: str) -> str | None:
    """host:port with an IP host, as nginx's $upstream_addr writes it (IPv6 compressed, in
    brackets); None when the host is a name."""
    host, _, port = address.rpartition(":")
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    return f"[{ip.compressed}]:{port}" if ip.version == 6 else f"{ip}:{port}"


MAP_KEYWORDS = frozenset({"default", "include", "hostnames", "volatile"})


class Match(Section):
    """Requests that carry a header with a value (e.g. X-Staff: 1)."""

    header: HeaderName
    """The header's name."""
    value: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._~:@/+=-]{0,127}$")]
    """The value it must have, exactly, case included (a letter or digit first; no spaces,
    quotes or separators)."""

    @field_validator("value")
    @classmethod
    def _not_a_keyword(cls, value: str) -> str:
        if value.lower() in MAP_KEYWORDS:
            raise ValueError(f"{value!r} is a word nginx's map reserves")
        return value


class Stage(Section):
    weight: int = Field(default=0, ge=0, le=100)
    """Percentage of requests sent to green in this stage (0 only in a match stage)."""
    match: Match | None = None
    """A match stage: only requests that match go to green, every other to blue (weight 0).
    Match stages come before the weighted ones; a rollback ends the match at once."""
    bake: Duration = 60.0
    """How long every SLO check must pass before the next stage."""
    gate: Literal["none", "promote", "hook"] = "none"
    """What the stage waits for once baked, before the next: none; promote: `cutover
    promote`; hook: the approve_stage hooks (asked every traffic.gate_poll until they all
    succeed; `cutover promote` approves too). A breach still rolls back while it waits."""


def _default_stages() -> list[Stage]:
    return [Stage(weight=10, bake=60.0), Stage(weight=50, bake=60.0), Stage(weight=100, bake=300.0)]


class TrafficDriver(StrEnum):
    HAPROXY = "haproxy"
    NGINX = "nginx"
    COMMAND = "command"
    HTTP = "http"
    SQL = "sql"


class HAProxySettings(Section):
    socket: ConfigPath | None = None
    """Runtime API unix socket (stats socket ... level admin)."""
    address: HostPort | None = None
    """Runtime API over TCP, host:port, instead of a socket."""
    backend: str = "app"
    """The backend holding the blue and green servers."""
    match_acl: ConfigPath | None = None
    """Match stages: the ACL file a frontend rule sends to match_backend, as HAProxy loaded it
    (e.g. `use_backend app_green if { req.hdr(X-Staff) -f /etc/haproxy/cutover-match.acl }`,
    the file empty); an absolute path, as haproxy.cfg names it. Cutover puts the stage's
    value in it through the Runtime API."""
    match_backend: str | None = None
    """Match stages: the backend holding only the green servers (same names as in backend),
    judged with them."""
    timeout: Duration = 2.0
    """Per-command time limit."""

    @field_validator("match_acl", mode="before")
    @classmethod
    def _absolute(cls, value: object) -> object:
        if isinstance(value, str) and not value.startswith("/"):
            raise ValueError(f"{value!r}: give the absolute path haproxy.cfg loads the ACL from; "
                             "HAProxy's Runtime API names the file exactly so")
        return value

    @model_validator(mode="after")
    def _one_endpoint(self) -> Self:
        if (self.socket is None) == (self.address is None):
            raise ValueError("give exactly one of socket (unix socket path) or address (host:port)")
        return self


UPSTREAM_DIRECTIVES = frozenset({
    "keepalive", "keepalive_requests", "keepalive_time", "keepalive_timeout", "zone", "hash",
    "ip_hash", "least_conn", "least_time", "random", "ntlm", "queue", "resolver",
    "resolver_timeout", "sticky"})
"""What an upstream block may hold besides Cutover's servers: connection and balancing
settings, never a `server` (it would take traffic the read-back knows nothing of)."""


class NginxSettings(Section):
    upstream_file: ConfigPath
    """The file holding the `upstream` block; Cutover rewrites it."""
    upstream: str = "app"
    """The upstream's name."""
    servers: dict[Name, HostPort]
    """Server name -> address, for every blue and green server."""
    directives: list[str] = Field(default_factory=list)
    """Extra lines for the upstream block, e.g. "keepalive 32" (Cutover owns the file)."""
    test_command: Argv = Field(default_factory=lambda: ["nginx", "-t"])
    reload_command: Argv = Field(default_factory=lambda: ["nginx", "-s", "reload"])
    timeout: Duration = 10.0


    @field_validator("directives")
    @classmethod
    def _plain_directives(cls, lines: list[str]) -> list[str]:
        for line in lines:
            if not line.strip() or any(c in line for c in ";{}\n\r\x00#"):
                raise ValueError(f"{line!r}: one directive per entry, without ';', braces or '#'")
            name = line.split()[0]
            if name not in UPSTREAM_DIRECTIVES:
                raise ValueError(f"{line!r}: {name!r} is not allowed here (servers come from "
                                 f"blue_servers and green_servers); allowed: "
                                 f"{', '.join(sorted(UPSTREAM_DIRECTIVES))}")
        return lines


ShiftArgv = Annotated[list[str], argv_template("target", "percentage", "blue_weight", "green_weight")]


class CommandDriverSettings(Section):
    argv: ShiftArgv = Field(default_factory=lambda: [
        "./scripts/traffic-shift.sh", "--target", "{target}", "--percentage", "{percentage}"])
    """The shift command; {target}, {percentage}, {blue_weight}, {green_weight} are filled in."""
    readback: Argv | None = None
    """Optional command printing the current green percentage."""
    timeout: Duration = 30.0


class HttpDriverSettings(Section):
    url: AnyHttpUrl
    """Control-plane endpoint receiving {"blue": N, "green": M} as JSON."""
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    readback_url: AnyHttpUrl | None = None
    token: SecretStr | None = None
    """Bearer token; never in the file: CUTOVER_TRAFFIC__HTTP__TOKEN or the credentials dir.
    Sent to url's origin (scheme, host, port) only, never to a readback_url elsewhere."""
    allow_http: bool = False
    """Send the token over plain http:// to a host other than loopback (it crosses the network
    readable by anyone on the path); by default a token needs https://."""
    timeout: Duration = 5.0

    @model_validator(mode="after")
    def _token_over_https(self) -> Self:
        if self.token is None or self.allow_http or self.url.scheme == "https":
            return self
        if is_loopback(self.url.host or ""):
            return self
        raise FieldError(("url",), f"{self.url} is plain http and the token would cross the "
                         "network in clear text; use https://, or set allow_http = true")


class SqlDriverSettings(Section):
    dsn: Annotated[str, dsn_without_secrets("CUTOVER_TRAFFIC__SQL__PASSWORD or the credentials "
                                            "directory")]
    """Database holding the feature-flag table (no password in the DSN)."""
    password: SecretStr | None = None
    table: TableName = "feature_flags"
    """The flags table (name or schema.name); never one of PostgreSQL's own."""
    name_column: SqlText = "feature_name"
    feature: SqlText
    """The flag's name, e.g. 'fhir_integration'."""
    percentage_column: SqlText = "rollout_percentage"

    @field_validator("table")
    @classmethod
    def _not_a_system_table(cls, table: str) -> str:
        if system_schema(table):
            raise ValueError(f"{table!r} is in one of PostgreSQL's own schemas; the flags table "
                             "is an application table")
        return table


class StickySettings(Section):
    by: Literal["cookie", "header"] = "cookie"
    """cookie: a client that holds the balancer's persistence cookie stays where it names,
    whatever the weights; new clients are split by the stage's weight. A colour at 0 % lets
    its clients go at once: a rollback moves every client to blue, the last stage every
    client to green. HAProxy: the backend needs `cookie <name> insert indirect nocache` and a
    `cookie <value>` on every server (checked before the first change); a server at weight 0
    is put in maintenance. nginx: the upstream file gains an upstream per colour and two maps;
    the server block uses `proxy_pass http://$cutover_<upstream>;` and `add_header Set-Cookie
    $cutover_<upstream>_cookie always;`.
    header: users are split by a hash of the header's value (a user id), the way nginx's
    split_clients does: a user on green at 10 % stays on green at 50 %; a request without the
    header is split by weight. nginx: a split_clients block in the upstream file; sql (a
    feature flag): the application checks each user with the same hash (`cutover bucket`)."""
    cookie: Annotated[str, Field(pattern=r"^[A-Za-z0-9_]{1,64}$")] = "cutover_colour"
    """nginx: the cookie naming the client's colour (HAProxy's is in its own config)."""
    header: HeaderName | None = None
    """by = "header": the header carrying the user's id, e.g. "X-User-Id"."""

    @model_validator(mode="after")
    def _header_given(self) -> Self:
        if self.by == "header" and self.header is None:
            raise FieldError(("header",), 'missing; by = "header" needs the header carrying the '
                             'user id, e.g. header = "X-User-Id"')
        return self


DriverSettings = (HAProxySettings | NginxSettings | CommandDriverSettings | HttpDriverSettings
                  | SqlDriverSettings)
"""One driver's section: TrafficSettings.driver_settings() gives the chosen one."""


class TrafficSettings(Section):
    driver: TrafficDriver = TrafficDriver.HAPROXY
    stages: list[Stage] = Field(default_factory=_default_stages, min_length=1)
    """Green percentages in order, each with its bake time; they must rise and end at 100."""
    blue_servers: list[Name] = Field(default_factory=lambda: ["blue"], min_length=1)
    green_servers: list[Name] = Field(default_factory=lambda: ["green"], min_length=1)
    split_tolerance: float = Field(default=2.0, gt=0, le=50)
    """Observed share may differ from the target by this many points before a stage counts."""
    confirm_timeout: Duration = 30.0
    """How long to wait for the observed split to match before the stage fails."""
    starved_after: float = Field(default=3.0, ge=1.0)
    """`cutover run`: a stage whose checks cannot pass for lack of evidence (too little
    traffic, no data, a silent source) for this many times its bake runs the stage_starved
    hooks, and if it is still starved as long again, holds and notifies, naming the checks."""
    control_percent: int = Field(default=5, ge=0, le=20)
    """`cutover run`: while the last stage (100) bakes, this share of requests stays on blue
    as a live control, so checks relative to blue compare both under the same load at the
    same moment (a busy host slows both, and is not read as green's fault). It moves to green
    once the bake has passed. 0: none; the last stage then compares green with blue's last
    value from before it."""
    hold: Duration = 600.0
    """`cutover run`: after the last stage, keep watching the SLOs this long (a breach still
    rolls back, and blue is still kept current) before finalizing."""
    finalize: Literal["auto", "manual"] = "auto"
    gate_poll: Duration = Field(default=15.0, gt=0)
    """A stage with gate = "hook": how often its approve_stage hooks are asked again."""
    """auto: finalize once the hold has passed; manual: wait for `cutover promote`."""
    sticky: StickySettings | None = None
    """Sticky stages (see [traffic.sticky]); none: every request is split by weight."""
    haproxy: HAProxySettings | None = None
    nginx: NginxSettings | None = None
    command: CommandDriverSettings | None = None
    http: HttpDriverSettings | None = None
    sql: SqlDriverSettings | None = None

    @field_validator("stages")
    @classmethod
    def _stages_rise_to_100(cls, stages: list[Stage]) -> list[Stage]:
        for i, s in enumerate(stages):
            if s.match is None and s.weight == 0:
                raise FieldError((i, "weight"), "missing; a stage gives green a share (1-100), "
                                 "or is a match stage (match = { header = ..., value = ... })")
            if s.match is not None and s.weight != 0:
                raise FieldError((i, "weight"), "a match stage sends only matching requests to "
                                 "green: give it no weight")
        matched = [s.match is not None for s in stages]
        if any(b and not a for a, b in pairwise(matched)):
            raise ValueError("match stages come first, before the weighted ones")
        weights = [s.weight for s in stages if s.match is None]
        if not weights:
            raise ValueError("after the match stages, weighted stages must rise to 100")
        if any(b <= a for a, b in pairwise(weights)):
            raise ValueError(f"weights must rise from stage to stage, got {weights}")
        if weights[-1] != 100:
            raise ValueError(f"the last stage must be 100 (all traffic on green), got {weights}")
        return stages

    @field_validator("green_servers")
    @classmethod
    def _disjoint(cls, green: list[str], info: ValidationInfo) -> list[str]:
        both = set(green) & set(info.data.get("blue_servers", []))
        if both:
            raise ValueError(f"{sorted(both)} also listed in blue_servers; a server is blue or green")
        return green

    def match_header(self) -> str | None:
        """The header the match stages route by (one for all), or None: there are none."""
        return next((s.match.header for s in self.stages if s.match is not None), None)

    def _can_match(self) -> bool:
        if self.driver is TrafficDriver.NGINX:
            return True
        return (self.driver is TrafficDriver.HAPROXY and self.haproxy is not None
                and self.haproxy.match_acl is not None and self.haproxy.match_backend is not None)

    def driver_settings(self) -> DriverSettings:
        """The chosen driver's section, typed (the validator below insists it is there; the
        command driver's has only defaults)."""
        chosen: DriverSettings | None = getattr(self, self.driver.value)
        return CommandDriverSettings() if chosen is None else chosen

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if getattr(self, self.driver.value) is None and self.driver is not TrafficDriver.COMMAND:
            raise FieldError((self.driver.value,), f"missing; driver '{self.driver.value}' needs a "
                             f"[traffic.{self.driver.value}] section")
        sticky_drivers = {"cookie": (TrafficDriver.HAPROXY, TrafficDriver.NGINX),
                          "header": (TrafficDriver.NGINX, TrafficDriver.SQL)}
        if self.sticky is not None and self.driver not in sticky_drivers[self.sticky.by]:
            able = " or ".join(f"'{d.value}'" for d in sticky_drivers[self.sticky.by])
            raise FieldError(("sticky",), f"sticky stages by {self.sticky.by} need driver {able}; "
                             f"driver '{self.driver.value}' cannot keep users on their colour that "
                             "way: remove [traffic.sticky] or change its `by`")
        headers = {s.match.header.lower() for s in self.stages if s.match is not None}
        if len(headers) > 1:
            raise FieldError(("stages",), f"match stages use one header, got {sorted(headers)}")
        for i, stage in enumerate(self.stages):
            if stage.match is not None and not self._can_match():
                raise FieldError(("stages", i, "match"), f"driver '{self.driver.value}' cannot send "
                                 "requests by header: match stages need driver 'nginx', or "
                                 "'haproxy' with traffic.haproxy.match_acl and match_backend")
        routed = self.sticky is not None or bool(headers)
        if (routed and self.nginx is not None
                and not re.fullmatch(r"[A-Za-z0-9_]+", self.nginx.upstream)):
            raise FieldError(("nginx", "upstream"), f"{self.nginx.upstream!r}: sticky and match "
                             "stages name nginx variables after the upstream: letters, digits "
                             "and '_' only")
        if self.sticky is not None and self.sticky.by == "cookie" and self.nginx is not None:
            for name, address in self.nginx.servers.items():
                if ip_port(address) is None:
                    raise FieldError(("nginx", "servers", name), f"{address!r}: sticky stages by "
                                     "cookie need an IP address here (nginx names the server that "
                                     "answered by the address it connected to)")
        if self.nginx is not None:
            missing = [s for s in self.blue_servers + self.green_servers if s not in self.nginx.servers]
            if missing:
                raise ValueError(f"nginx.servers has no address for {missing}")
        return self
