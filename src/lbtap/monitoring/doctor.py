"""``lbtap doctor``: checks over a host snapshot (and optionally the DB view of the API).

Every check is a pure function ``(HostSnapshot[, DbView]) -> list[Finding]``. A finding
says how bad it is, what is wrong, what to do, and — when the remedy is safe to apply
without a person's judgement — carries it as a plan of ``HostDriver`` calls that
``apply_fixes`` runs. Remedies that could cut a VM off or drop traffic that a person
may want (deleting a tap, enabling br_netfilter under an unknown iptables policy) stay
advice only.

The check the seed needed most: the same IP on an uplink NIC and on the bridge the NIC
is enslaved to (a half-done move of the NIC's address onto the bridge). The agent's
re-add then fails with EEXIST forever and, in Neutron, every loop re-reports every tap.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from lbtap.domain import naming
from lbtap.domain.constants import DEVICE_OWNER_FLOATINGIP, PORT_STATUS_ACTIVE, VXLAN_OVERHEAD
from lbtap.drivers.host.base import HostDriver, Route
from lbtap.drivers.host.errors import HostError
from lbtap.monitoring.hoststate import HostSnapshot, ip_of

CRITICAL, WARNING, INFO = "critical", "warning", "info"
_RANK = {INFO: 0, WARNING: 1, CRITICAL: 2}


@dataclass(frozen=True)
class FixStep:
    """One driver call: ``getattr(driver, method)(*args, **kwargs)``."""

    method: str
    args: tuple = ()
    kwargs: tuple[tuple[str, Any], ...] = ()

    def apply(self, driver: HostDriver) -> None:
        getattr(driver, self.method)(*self.args, **dict(self.kwargs))

    def describe(self) -> str:
        parts = [repr(a) if not isinstance(a, Route) else _route_text(a) for a in self.args]
        parts += [f"{k}={v!r}" for k, v in self.kwargs]
        return f"{self.method}({', '.join(parts)})"


@dataclass(frozen=True)
class Finding:
    check: str
    severity: str
    what: str
    remedy: str
    devices: tuple[str, ...] = ()
    fix: tuple[FixStep, ...] = ()

    @property
    def fixable(self) -> bool:
        return bool(self.fix)

    def to_dict(self) -> dict:
        return {"check": self.check, "severity": self.severity, "what": self.what, "remedy": self.remedy,
                "devices": list(self.devices), "fixable": self.fixable,
                "fix": [s.describe() for s in self.fix]}


@dataclass(frozen=True)
class DbView:
    """What the server knows, for the host-vs-DB check. ``host``: the agent host name
    whose bound ports should be here; ``agent``: its agent record (None: none found);
    ``networks``: None when they could not be listed."""

    host: str
    ports: list[dict] = field(default_factory=list)
    networks: list[dict] | None = None
    agent: dict | None = None


def _route_text(r: Route) -> str:
    via = f" via {r.gateway}" if r.gateway else ""
    metric = f" metric {r.metric}" if r.metric is not None else ""
    return f"{r.dst}{via} dev {r.ifname}{metric}"


# ---------------------------------------------------------------------- host checks

def check_bridge_port_addresses(snap: HostSnapshot) -> list[Finding]:
    """The seed's root cause: the same IP on a NIC and on the bridge it is enslaved to.

    The fix deletes the address from the NIC only (the bridge's addresses are never
    touched) and moves the NIC's gateway routes to the bridge: once the NIC is a bridge
    port it no longer does L3, so such routes are dead anyway. promote_secondaries is
    set first so the NIC's other addresses survive the deletion of its primary.
    """
    out = []
    for port in snap.links:
        if not port.master:
            continue
        bridge_ips = {ip_of(a.cidr) for a in snap.addresses_of(port.master)}
        own = [a for a in snap.addresses_of(port.name) if a.scope != "link"]
        gw_routes = [r for r in snap.routes_of(port.name) if r.gateway]
        dup = [a for a in own if ip_of(a.cidr) in bridge_ips]
        if dup:
            steps: list[FixStep] = [FixStep("set_promote_secondaries", (port.name, True))]
            steps += [FixStep("delete_route", (r,)) for r in gw_routes]
            steps += [FixStep("delete_address", (port.name, a.cidr)) for a in dup]
            steps += [FixStep("add_route", (replace(r, ifname=port.master),)) for r in gw_routes]
            moved = f"; routes {', '.join(_route_text(r) for r in gw_routes)} move to {port.master}" if gw_routes else ""
            stuck = [r for r in gw_routes if not _on_link(snap, port.master, r.gateway)]
            if stuck:
                # The kernel would refuse the route on the bridge after we deleted it from
                # the NIC: the host would lose it. Leave this one to a person.
                steps = []
                moved += (f" (not automatic: {', '.join(r.gateway or '' for r in stuck)} is not on a subnet of "
                          f"{port.master}; add the route with 'onlink' or a matching address first)")
            out.append(Finding(
                "duplicate-address", CRITICAL,
                f"{', '.join(a.cidr for a in dup)} is on {port.name} and on the bridge {port.master} it is "
                f"enslaved to (half-done move of the NIC's address): re-adding it fails with 'File exists'",
                f"delete the address from {port.name} only (ip addr del {dup[0].cidr} dev {port.name}){moved}; "
                f"the bridge keeps its addresses",
                (port.name, port.master), tuple(steps)))
            own = [a for a in own if a not in dup]
        if own:
            out.append(Finding(
                "address-on-bridge-port", WARNING,
                f"{port.name} is a port of {port.master} but holds {', '.join(a.cidr for a in own)}, "
                f"which is unused at L3 while enslaved",
                f"move the address to {port.master} (add it there, then delete it from {port.name})",
                (port.name, port.master)))
        elif gw_routes and not dup:
            out.append(Finding(
                "route-on-bridge-port", WARNING,
                f"routes {', '.join(_route_text(r) for r in gw_routes)} still use {port.name}, a port of {port.master}",
                f"move the routes to {port.master}", (port.name, port.master)))
    return out


def _on_link(snap: HostSnapshot, ifname: str, gateway: str | None) -> bool:
    """Whether ``gateway`` lies in a subnet of one of ``ifname``'s addresses."""
    if not gateway:
        return True
    gw = ipaddress.ip_address(gateway)
    return any(gw in ipaddress.ip_interface(a.cidr).network for a in snap.addresses_of(ifname)
               if ipaddress.ip_interface(a.cidr).version == gw.version)


def check_same_ip_on_unrelated_links(snap: HostSnapshot) -> list[Finding]:
    """One IP on two links that are not a bridge and its port (that case is the seed's
    fault, above): replies leave by whichever link the kernel picks."""
    by_ip: dict[str, list[str]] = {}
    for a in snap.addresses:
        if a.scope == "global":
            by_ip.setdefault(ip_of(a.cidr), []).append(a.ifname)
    out = []
    for ip, devs in sorted(by_ip.items()):
        devs = sorted(set(devs))
        masters = {d: (snap.link(d).master if snap.link(d) else None) for d in devs}
        ports = {d for d in devs if masters[d] in devs}  # NIC + its bridge: reported above
        rest = [d for d in devs if d not in ports and d not in {masters[p] for p in ports}]
        if len(rest) > 1:
            out.append(Finding(
                "same-ip-two-links", WARNING, f"{ip} is configured on {', '.join(rest)}",
                "keep it on the link that should answer for it and delete it from the others", tuple(rest)))
    return out


def check_orphan_taps(snap: HostSnapshot) -> list[Finding]:
    """Taps in no bridge: the VM behind them has no network."""
    out = []
    for lk in snap.links:
        if naming.is_tap(lk.name) and not lk.master:
            who = "a process has it open (carrier)" if lk.carrier else "nothing has it open"
            out.append(Finding(
                "orphan-tap", WARNING, f"{lk.name} is in no bridge ({who})",
                f"if its port still exists, restart the agent or re-plug it (lbtap vif plug); "
                f"if not, delete it (ip link del {lk.name})", (lk.name,)))
    return out


def check_bridges(snap: HostSnapshot) -> list[Finding]:
    """brq bridges with no ports at all, or with no tap left (the network left this host)."""
    out = []
    for br in snap.bridges():
        if not naming.is_bridge(br.name):
            continue
        ports = snap.ports_of(br.name)
        addrs = [a for a in snap.addresses_of(br.name) if a.scope != "link"]
        if not ports:
            # A bridge holding an address may carry the host's own connectivity: never
            # delete that automatically.
            fix = () if addrs else (FixStep("delete_link", (br.name,)),)
            held = f" but holds {', '.join(a.cidr for a in addrs)}" if addrs else ""
            out.append(Finding(
                "empty-bridge", WARNING, f"bridge {br.name} has no interfaces{held}",
                f"delete it (ip link del {br.name})" + (" after moving its addresses" if addrs else ""),
                (br.name,), fix))
        elif not any(naming.is_tap(p.name) for p in ports):
            out.append(Finding(
                "bridge-without-taps", INFO,
                f"bridge {br.name} has only {', '.join(p.name for p in ports)}: no port of its network uses this host",
                "nothing if a port is about to be plugged; otherwise the agent removes it", (br.name,)))
    return out


def check_br_netfilter(snap: HostSnapshot) -> list[Finding]:
    """Security groups on iptables need bridged frames to traverse iptables."""
    value, tables = snap.br_nf_call_iptables, snap.firewall_tables
    if value == 1:
        return []
    filtering = bool(tables)
    state = "absent (br_netfilter not loaded)" if value is None else "0"
    if filtering:
        return [Finding(
            "br-netfilter", CRITICAL if value == 0 else WARNING,
            f"net.bridge.bridge-nf-call-iptables is {state} while lbtap filtering is on "
            f"({', '.join(tables)}): bridged traffic bypasses the security-group rules",
            "sysctl -w net.bridge.bridge-nf-call-iptables=1 in this namespace "
            "(not applied by --fix: it changes what every bridged frame meets in iptables)")]
    unknown = " (could not list firewall tables)" if tables is None else ""
    return [Finding(
        "br-netfilter", INFO,
        f"net.bridge.bridge-nf-call-iptables is {state}; no lbtap firewall tables exist{unknown}",
        "nothing to do unless security groups are expected here")]


def check_mtu(snap: HostSnapshot) -> list[Finding]:
    """Tap MTU must equal its bridge's; a VXLAN device must fit in its underlay."""
    out = []
    for lk in snap.links:
        br = snap.link(lk.master) if lk.master else None
        if br is not None and naming.is_tap(lk.name) and lk.mtu != br.mtu:
            out.append(Finding(
                "mtu-mismatch", WARNING,
                f"{lk.name} has MTU {lk.mtu} but its bridge {br.name} has {br.mtu}: "
                f"{'large frames from the VM are dropped' if lk.mtu > br.mtu else 'the VM cannot use the full MTU'}",
                f"set the tap's MTU to the bridge's (ip link set {lk.name} mtu {br.mtu})",
                (lk.name, br.name), (FixStep("set_link", (lk.name,), (("mtu", br.mtu),)),)))
        if lk.vxlan is not None:
            under = _underlay(snap, lk.vxlan.dev, lk.vxlan.local)
            if under is None:
                continue
            overhead = VXLAN_OVERHEAD + (20 if lk.vxlan.local and ":" in lk.vxlan.local else 0)
            limit = under.mtu - overhead
            if lk.mtu > limit:
                out.append(Finding(
                    "vxlan-mtu", WARNING,
                    f"{lk.name} has MTU {lk.mtu} but its underlay {under.name} ({under.mtu}) allows {limit}: "
                    f"full-size frames are fragmented or dropped",
                    f"lower the network's MTU to {limit} or raise {under.name}'s MTU to {lk.mtu + overhead}",
                    (lk.name, under.name)))
    return out


def _underlay(snap: HostSnapshot, dev: str | None, local: str | None):
    if dev:
        return snap.link(dev)
    if local:
        holder = next((a.ifname for a in snap.addresses if ip_of(a.cidr) == local), None)
        return snap.link(holder) if holder else None
    return None


def check_vxlan_local(snap: HostSnapshot) -> list[Finding]:
    """A VXLAN device whose local IP is not ours sends nothing anyone answers."""
    ips = snap.local_ips()
    return [
        Finding("vxlan-local-ip", CRITICAL,
                f"{lk.name} (VNI {lk.vxlan.vni}) uses local IP {lk.vxlan.local}, which is not an address of this namespace",
                f"fix the agent's local_ip (or add {lk.vxlan.local} to the underlay), then delete {lk.name} "
                f"so the agent recreates it", (lk.name,))
        for lk in snap.links
        if lk.vxlan is not None and lk.vxlan.local and lk.vxlan.local not in ips
    ]


HOST_CHECKS: tuple[Callable[[HostSnapshot], list[Finding]], ...] = (
    check_bridge_port_addresses, check_same_ip_on_unrelated_links, check_orphan_taps, check_bridges, check_br_netfilter, check_mtu, check_vxlan_local,
)


# ---------------------------------------------------------------------- host vs DB

AGENT_CPU_WARN = 80.0  # percent of one core, sustained over a minute (see monitoring/process.py)


def check_agent(db: DbView) -> list[Finding]:
    """The agent for this host: registered, alive, and not spinning (the seed's storm
    showed first as a busy agent process)."""
    if db.agent is None:
        return [Finding("agent", WARNING, f"no L2 agent of host {db.host} is registered with the server",
                        "start the agent (lbtap agent --host ...) or pass the right --host")]
    if not db.agent.get("alive", False):
        return [Finding("agent", CRITICAL, f"the L2 agent of host {db.host} is not alive (last heartbeat "
                        f"{db.agent.get('heartbeat_timestamp')})", "check the agent process and its logs (lbtap logs --diagnose)")]
    proc = (db.agent.get("configurations") or {}).get("process") or {}
    # Sustained over a minute: a busy heartbeat interval (start, a burst of plugs) is
    # work, not a storm. Agents that do not report it yet: their last interval.
    cpu = proc["cpu_percent_sustained"] if "cpu_percent_sustained" in proc else proc.get("cpu_percent")
    if isinstance(cpu, (int, float)) and cpu >= AGENT_CPU_WARN:
        return [Finding("agent-cpu", WARNING, f"the L2 agent of host {db.host} has used at least {cpu:.0f}% CPU "
                        "throughout the last minute" if "cpu_percent_sustained" in proc else
                        f"the L2 agent of host {db.host} uses {cpu:.0f}% CPU",
                        "an agent re-processing every device loops like this (the seed's update_device_up storm): "
                        "run lbtap logs --diagnose on its log and fix the failing device")]
    return []


def check_db_consistency(snap: HostSnapshot, db: DbView) -> list[Finding]:
    """Ports bound here vs the taps present, and taps vs the ports that exist."""
    out = []
    taps = {lk.name: lk for lk in snap.links if naming.is_tap(lk.name)}
    for p in db.ports:
        if p.get("binding:host_id") != db.host or p.get("device_owner") == DEVICE_OWNER_FLOATINGIP:
            continue
        tap, want = naming.tap_name(p["id"]), naming.bridge_name(p["network_id"])
        lk = taps.get(tap)
        if lk is None:
            if p.get("status") == PORT_STATUS_ACTIVE:
                out.append(Finding(
                    "db-active-tap-missing", CRITICAL,
                    f"port {p['id']} is ACTIVE in the database but {tap} does not exist on host {db.host}",
                    "re-plug the port (lbtap vif plug) or, if the VM is gone, delete the port; the agent should "
                    "have reported it down — check it with lbtap status", (tap,)))
        elif lk.master != want:
            fix = (FixStep("enslave", (tap, want)),) if snap.link(want) is not None else ()
            out.append(Finding(
                "db-wrong-bridge", CRITICAL,
                f"{tap} (port {p['id']}) is in {lk.master or 'no bridge'} but its network's bridge is {want}",
                f"move it: ip link set {tap} master {want}" + ("" if fix else f" (after the agent creates {want})"),
                (tap, want), fix))
    ids = [p["id"] for p in db.ports]
    for name in sorted(taps):
        prefix = naming.port_id_prefix(name) or ""
        if not any(i.startswith(prefix) for i in ids):
            out.append(Finding(
                "tap-without-port", WARNING, f"{name} belongs to no port in the database",
                f"delete it if no VM uses it (lbtap vif unplug, or ip link del {name})", (name,)))
    here = {naming.bridge_name(p["network_id"]) for p in db.ports if p.get("binding:host_id") == db.host}
    known = {naming.bridge_name(n["id"]) for n in db.networks} if db.networks is not None else None
    for br in snap.bridges():
        if naming.is_bridge(br.name) and br.name not in here and (known is None or br.name in known):
            out.append(Finding(
                "bridge-without-port", WARNING,
                f"bridge {br.name} serves no port bound to host {db.host}",
                f"the agent removes it once idle; if it stays, move any host addresses off it and delete it "
                f"(ip link del {br.name})", (br.name,)))
    if db.networks is not None:
        nets = [n["id"] for n in db.networks]
        for br in snap.bridges():
            if naming.is_bridge(br.name) and not any(naming.bridge_name(n) == br.name for n in nets):
                out.append(Finding(
                    "bridge-without-network", WARNING, f"bridge {br.name} belongs to no network in the database",
                    f"move any host addresses off it, then delete it (ip link del {br.name})", (br.name,)))
    return out


# ---------------------------------------------------------------------- running

def run_checks(snap: HostSnapshot, db: DbView | None = None) -> list[Finding]:
    """Every host check, plus the DB checks when ``db`` is given; worst first."""
    findings = [f for check in HOST_CHECKS for f in check(snap)]
    if db is not None:
        findings += check_agent(db) + check_db_consistency(snap, db)
    return sorted(findings, key=lambda f: -_RANK[f.severity])


def apply_fixes(driver: HostDriver, findings: list[Finding]) -> list[tuple[Finding, str | None]]:
    """Apply each fixable finding's plan in order; (finding, error or None) per finding.

    A failing step stops that finding's plan only: one stuck device must not keep the
    others from being repaired.
    """
    results = []
    for f in findings:
        if not f.fixable:
            continue
        err = None
        for step in f.fix:
            try:
                step.apply(driver)
            except HostError as e:
                err = f"{step.describe()}: {e}"
                break
        results.append((f, err))
    return results


def exit_code(findings: list[Finding]) -> int:
    """0 healthy (info at most), 1 if a warning or critical finding remains."""
    return 1 if any(_RANK[f.severity] >= _RANK[WARNING] for f in findings) else 0
