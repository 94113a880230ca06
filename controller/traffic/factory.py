"""The configured balancer."""

from __future__ import annotations

from collections.abc import Callable

from config.traffic import CommandDriverSettings, TrafficDriver, TrafficSettings
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
    match traffic.driver:
        case TrafficDriver.HAPROXY:
            assert traffic.haproxy is not None
            return HAProxyBalancer(traffic.haproxy, blue, green)
        case TrafficDriver.NGINX:
            assert traffic.nginx is not None
            return NginxBalancer(traffic.nginx, blue, green)
        case TrafficDriver.COMMAND:
            return CommandBalancer(traffic.command or CommandDriverSettings())
        case TrafficDriver.HTTP:
            assert traffic.http is not None
            return HttpBalancer(traffic.http)
        case TrafficDriver.SQL:
            assert traffic.sql is not None
            return SqlFlagBalancer(traffic.sql)
