"""A policy's `conditions` compiled for fast checks: source networks, access hours, validity period.

`failure()` returns why the conditions do not hold, in words for the denied user's error message,
or None when they all hold.
"""

from __future__ import annotations

import functools
import ipaddress
import zoneinfo
from dataclasses import dataclass
from datetime import datetime

from connector.policy.model import DAYS, Conditions, parse_hours

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class CompiledConditions:
    networks: tuple[Network, ...] | None
    ranges: tuple[tuple[int, int, int], ...]  # (IP version, netmask, network) as integers, for speed
    networks_text: str
    days: frozenset[int] | None  # datetime.weekday() numbers; None = every day
    hours: tuple[int, int] | None  # minutes after midnight, start inclusive, end exclusive
    hours_text: str
    timezone: zoneinfo.ZoneInfo | None
    not_before: datetime | None
    not_after: datetime | None

    @classmethod
    def compile(cls, conditions: Conditions) -> CompiledConditions:
        window = conditions.time
        networks = (
            tuple(ipaddress.ip_network(c) for c in conditions.source_ips) if conditions.source_ips is not None else None
        )
        return cls(
            networks=networks,
            ranges=tuple((n.version, int(n.netmask), int(n.network_address)) for n in networks or ()),
            networks_text=", ".join(str(n) for n in networks or ()),
            days=(
                frozenset(DAYS.index(d) for d in window.days)
                if window is not None and len(set(window.days)) < len(DAYS)
                else None
            ),
            hours=parse_hours(window.hours) if window is not None and window.hours else None,
            hours_text=_describe_window(window.days, window.hours, window.timezone) if window is not None else "",
            timezone=zoneinfo.ZoneInfo(window.timezone) if window is not None else None,
            not_before=conditions.not_before,
            not_after=conditions.not_after,
        )

    @property
    def trivial(self) -> bool:
        """True when there is nothing to check, so the hot path can skip the call."""
        return self.networks is None and self.timezone is None and self.not_before is None and self.not_after is None

    def failure(self, source_ip: str, now: datetime) -> str | None:
        if self.not_before is not None and now < self.not_before:
            return f"not valid before {self.not_before.isoformat()}"
        if self.not_after is not None and now >= self.not_after:
            return f"expired at {self.not_after.isoformat()}"
        if self.networks is not None:
            address = parse_address(source_ip)
            if address is None:
                return f"source IP {source_ip!r} is not an IP address"
            version, value = address.version, int(address)
            if not any(v == version and value & mask == network for v, mask, network in self.ranges):
                return f"source IP {source_ip} is not in {self.networks_text}"
        if self.timezone is not None and not self._in_window(now):
            local = now.astimezone(self.timezone)
            return f"access is allowed {self.hours_text}; it is {DAYS[local.weekday()]} {local:%H:%M} there"
        return None

    def _in_window(self, now: datetime) -> bool:
        local = now.astimezone(self.timezone)
        day = local.weekday()
        if self.hours is None:
            return self.days is None or day in self.days
        start, end = self.hours
        minute = local.hour * 60 + local.minute
        if start < end or end == 0:
            inside = start <= minute < (end or 24 * 60)
        elif minute >= start:
            inside = True
        else:
            # Past midnight in a window that wraps: it belongs to the day it started on.
            inside = minute < end
            day = (day - 1) % 7
        return inside and (self.days is None or day in self.days)


@functools.lru_cache(maxsize=4096)
def parse_address(text: str) -> Address | None:
    """An IP address, with IPv4-mapped IPv6 (`::ffff:10.0.0.1`, how dual-stack sockets report
    IPv4 peers) read as the IPv4 address so that IPv4 CIDRs apply to it."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _describe_window(days: tuple[str, ...], hours: str | None, timezone: str) -> str:
    when = "every day" if len(set(days)) == len(DAYS) else "on " + ", ".join(d for d in DAYS if d in days)
    return f"{when}{' ' + hours if hours else ''} ({timezone})"
