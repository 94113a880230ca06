"""The configured balancer."""

from __future__ import annotations

from collections.abc import Callable

from config.traffic import (
    CommandDriverSettings,
    HAProxySettings,
    HttpDriverSettings,
    NginxSettings,
    SqlDriverSettings,
    TrafficSettings,
)
from controller.traffic.balancer import LoadBalancer
from controller.traffic.command import CommandBalancer
from controller.traffic.haproxy import HAProxyBalancer
from controller.traffic.httpapi import HttpBalancer
from controller.traffic.nginx import NginxBalancer
from controller.traffic.sqlflag import SqlFlagBalancer

Balancers = Callable[[TrafficSettings], LoadBalancer]
"""Where the daemon and rollback get a balancer: balancer_for, or a test's fake."""


def balancer_for(traffic: TrafficSettings) -> LoadBalancer:
    blue, green = traffic.blue_servers, traffic.green_servers
    match traffic.driver_settings():
        case HAProxySettings() as haproxy:
            return HAProxyBalancer(haproxy, blue, green, sticky=traffic.sticky is not None)
        case NginxSettings() as nginx:
            sticky = traffic.sticky
            return NginxBalancer(nginx, blue, green, match_header=traffic.match_header(),
                                 sticky_cookie=sticky.cookie if sticky and sticky.by == "cookie" else None,
                                 sticky_header=sticky.header if sticky and sticky.by == "header" else None)
        case CommandDriverSettings() as command:
            return CommandBalancer(command)
        case HttpDriverSettings() as http:
            return HttpBalancer(http)
        case SqlDriverSettings() as flags:
            return SqlFlagBalancer(flags)
