"""Agent-side QoS: Neutron ``bandwidth_limit`` rules applied with tc.

Public API: ``BandwidthLimit(max_kbps, max_burst_kbps)``, ``PortLimits``,
``from_rules(neutron_rule_dicts)``, ``ifb_name(tap)``; ``TcQosDriver(netns)`` with
``set_limits(tap, ingress, egress)``, ``clear(tap)``, ``limits(tap)`` (read back from
the kernel) and ``remove_orphan_ifbs()``; ``FakeQos`` with the same interface in memory;
``max_burst_kbps(max_kbps)``, the largest burst tc can express at a rate.

Directions are Neutron's, from the guest's point of view: "ingress" is traffic toward
the guest (leaving the host through the tap), "egress" traffic from the guest
(arriving on the tap).

What this kernel can do (probed in lbtt- namespaces): tbf, htb, the ingress qdisc, u32
and mirred exist, ifb devices can be created; ``police`` does not ("Failed to load TC
action module"), nor matchall/flower. Choices:

* toward the guest: a TBF as the tap's root qdisc (rate, burst = max_burst_kbps or
  Neutron's default of 80% of the rate, latency 50 ms as in Neutron);
* from the guest: the tap's ingress qdisc redirects every frame (u32 match-all, mirred
  egress redirect) to ``ifb<port-id prefix>``, shaped there by a TBF. Shaping queues
  where policing drops, which TCP prefers. ``egress_mode="police"`` (or "auto" when ifb
  devices are refused) polices on the tap's ingress instead, where the kernel has the
  action; here that path is probed and its functional test skips.

tc is driven through pyroute2 (0.9.7) rather than the ``tc`` binary: it worked for
every object needed (tbf, ingress, u32 with a mirred action, ifb links), its netlink
socket is opened inside the namespace once and reused (no fork per call), and failures
arrive as errno values that map onto ``lbtap.drivers.host.errors``.
"""

from lbtap.drivers.qos.driver import FakeQos, TcQosDriver
from lbtap.drivers.qos.model import BandwidthLimit, PortLimits, from_rules, ifb_name, max_burst_kbps

__all__ = ["BandwidthLimit", "FakeQos", "PortLimits", "TcQosDriver", "from_rules", "ifb_name", "max_burst_kbps"]
