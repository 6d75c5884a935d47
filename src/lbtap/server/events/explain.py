"""``explain``: why a port is (not) ACTIVE, from what the server knows.

A pure function of the port, its network, the L2 agent of its binding host (with the
heartbeat's ``configurations``), the port's timeline and the active storm alarms. The
checks follow the port's path to ACTIVE and stop at the first one that fails, so the
answer names one cause and one remedy:

admin state → binding host → that host's agent alive → device seen by the agent →
device wired without error → reported up.
"""

from __future__ import annotations

from typing import Any

from lbtap.domain import constants as c
from lbtap.domain.naming import tap_name


def _ago(now: float, at: float | None) -> str:
    return "never" if at is None else f"{max(0.0, now - at):.1f}s ago"


def _last(timeline: list[dict[str, Any]], kinds: tuple[str, ...], host: str | None = None) -> dict | None:
    for ev in reversed(timeline):
        if ev["kind"] in kinds and (host is None or ev.get("host") == host):
            return ev
    return None


def explain(port: dict[str, Any], *, network: dict[str, Any] | None, agent: dict[str, Any] | None,
            agent_heartbeat_age: float | None, timeline: list[dict[str, Any]],
            alarms: list[dict[str, Any]], now: float) -> dict[str, Any]:
    """The verdict for one port: ``{"verdict", "active", "reason", "remedy", "checks", ...}``.

    ``agent``: the L2 agent row (API form: ``alive``, ``configurations``) of the port's
    binding host, None when no such agent ever reported. ``timeline``: the port's events,
    oldest first. Verdicts: ``active``, ``status_fixed``, ``admin_down``,
    ``network_admin_down``, ``unbound``, ``agent_missing``, ``agent_dead``,
    ``device_never_seen``, ``device_failing``, ``device_down``, ``pending``.
    """
    device = tap_name(port["id"])
    host = port.get("binding:host_id") or ""
    checks: list[dict[str, Any]] = []

    def out(verdict: str, reason: str, remedy: str, **extra: Any) -> dict[str, Any]:
        return {"port_id": port["id"], "device": device, "status": port.get("status"), "host": host or None,
                "verdict": verdict, "active": verdict == "active", "reason": reason, "remedy": remedy,
                "checks": checks, **extra}

    def check(name: str, ok: bool, what: str) -> bool:
        checks.append({"check": name, "ok": ok, "what": what})
        return ok

    storm = [a for a in alarms if a.get("active") and device in a.get("devices", ())]
    seen = _last(timeline, ("device_seen", "active"), host or None)
    if port.get("status") == c.PORT_STATUS_ACTIVE:
        check("status", True, "ACTIVE")
        up = _last(timeline, ("active",))
        when = f" (reported up by {up.get('host')} {_ago(now, up['at'])})" if up else ""
        note = f"; but device {device} is named in an active storm alarm of {storm[0]['host']}" if storm else ""
        return out("active", f"port is ACTIVE: wired on host {host or '?'}{when}{note}",
                   "none" if not storm else "see `lbtap events` for the storm alarm", storm_alarms=storm)
    check("status", False, str(port.get("status")))
    if port.get("device_owner") == c.DEVICE_OWNER_FLOATINGIP:
        return out("status_fixed", "floating IP ports have no device; their status stays N/A", "none")
    if not check("admin_state_up", bool(port.get("admin_state_up")), f"admin_state_up={port.get('admin_state_up')}"):
        return out("admin_down", "the port is administratively down (admin_state_up=false): the agent keeps "
                   "its device out of service and reports it DOWN",
                   f"openstack port set --enable {port['id']} (PUT admin_state_up=true)")
    if network is not None and not check("network_admin_state_up", bool(network.get("admin_state_up")),
                                         f"network admin_state_up={network.get('admin_state_up')}"):
        return out("network_admin_down", f"its network {network.get('id')} is administratively down",
                   f"enable the network {network.get('id')} (admin_state_up=true)")
    if not check("binding", bool(host), f"binding:host_id={host or '(none)'}"):
        return out("unbound", "the port is bound to no host: no hypervisor plugged its device yet, and no agent "
                   f"has seen a device {device}",
                   f"plug it on a host (lbtap vif plug {port['id']} --host HOST) or set binding:host_id")
    if not check("agent", agent is not None, f"L2 agent on {host}: {'present' if agent else 'none'}"):
        return out("agent_missing", f"the port is bound to host {host!r}, but no L2 agent has ever reported "
                   "from that host", f"start the L2 agent on {host} (lbtap agent --host {host}), or rebind the port")
    assert agent is not None
    age = f"last heartbeat {agent_heartbeat_age:.0f}s ago" if agent_heartbeat_age is not None else "no heartbeat"
    if not check("agent_alive", bool(agent.get("alive")), age):
        return out("agent_dead", f"the L2 agent on {host} is dead ({age}): nobody wires or reports the port",
                   f"restart the L2 agent on {host}; check `lbtap status` and its log")
    conf = agent.get("configurations") or {}
    failing = (conf.get("retrying_devices") or {}).get(device)
    if failing is not None:  # before "seen": the timeline may have been pruned
        check("device_wiring", False, str(failing.get("error") or "failing"))
        return out("device_failing", f"the agent on {host} sees {device} but cannot wire it "
                   f"(attempt {failing.get('attempts', '?')}): {failing.get('error') or 'unknown error'}",
                   "fix the cause above (`lbtap doctor --netns ...` checks the host, "
                   "`lbtap logs --diagnose` explains the agent's errors); the agent retries on its own",
                   error=failing.get("error"), attempts=failing.get("attempts"))
    seen_what = f"device {device} " + (f"seen {_ago(now, seen['at'])}" if seen else "never seen")
    if not check("device_seen", seen is not None, seen_what):
        return out("device_never_seen", f"the agent on {host} never saw a device {device}: its tap does not exist "
                   f"on {host} (not plugged, wrong host or namespace, or not a tap/veth)",
                   f"plug the VIF on {host} (lbtap vif plug {port['id']}); check `lbtap bridges` on that host")
    down = _last(timeline, ("down",), host)
    if down is not None and down["at"] >= seen["at"]:
        return out("device_down", f"the agent on {host} reported {device} down {_ago(now, down['at'])}: the device "
                   "went away (unplugged) or was taken out of service", f"re-plug the VIF on {host}")
    pending = conf.get("pending")
    return out("pending", f"the agent on {host} saw {device} {_ago(now, seen['at'])} and has not reported it up yet "
               f"(agent pending devices: {pending if pending is not None else '?'})",
               "wait a moment; if it stays, check the agent's log and `lbtap doctor` on that host")
