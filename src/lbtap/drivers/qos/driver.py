"""Applying bandwidth limits with tc through pyroute2, inside a network namespace.

``TcQosDriver`` is the real driver, ``FakeQos`` the in-memory stand-in that records the
limits per tap. The netlink socket is opened inside the namespace (it stays bound to
it), so every tc operation lands there whatever thread calls.
"""

from __future__ import annotations

import errno
import threading

from lbtap.drivers.host import errors
from lbtap.drivers.host.netns import in_namespace
from lbtap.drivers.qos.model import BandwidthLimit, PortLimits, ifb_name, is_lbtap_ifb

INGRESS_HANDLE = 0xFFFF0000  # "ffff:", the ingress qdisc
ROOT_HANDLE = 0x10000  # "1:", our TBF on the tap (toward the guest) and on the ifb
ETH_P_ALL = 0x0003


def _err(e: Exception, op: str, device: str) -> errors.HostError:
    code = getattr(e, "code", None) or getattr(e, "errno", None)
    return errors.from_errno(code, f"{op} {device}: {e}", op=op, device=device)


class TcQosDriver:
    """Bandwidth limits per tap, from the guest's point of view (Neutron's directions).

    * ingress (toward the guest): a TBF as the tap's root qdisc.
    * egress (from the guest): the tap's ingress qdisc redirects everything (u32
      match-all + mirred) to ``ifb<port>``, whose root TBF shapes it. Shaping rather than
      policing because this kernel has no ``police`` action; shaping also treats TCP
      better (it queues instead of dropping bursts).

    ``egress_mode="police"`` instead polices the tap's ingress (u32 match-all + police
    drop), Neutron's way, for kernels that have ``police`` but no ifb; ``"auto"`` uses ifb
    and falls back to police when the kernel refuses ifb devices.

    ``set_limits`` and ``clear`` are idempotent; ``None`` in a direction removes that
    limit. Errors are ``HostError`` subclasses. Call it from a thread without a running
    asyncio loop (pyroute2's synchronous ``IPRoute`` runs its own), e.g. the agent's
    executor thread; calls are serialised by a lock.
    """

    def __init__(self, netns: str | None = None, *, egress_mode: str = "auto", ipr=None):  # noqa: ANN001
        """``ipr``: an open pyroute2 ``IPRoute`` bound to ``netns`` to use instead of
        opening one (tests pass a recording stand-in of the netlink boundary)."""
        if egress_mode not in ("auto", "ifb", "police"):
            raise ValueError(f"egress_mode must be auto, ifb or police, not {egress_mode!r}")
        self.netns = netns
        self.egress_mode = egress_mode
        self._lock = threading.Lock()
        self._ipr = ipr
        self._given_ipr = ipr is not None  # a stand-in (tests): links are listed through it

    def _ip(self):  # noqa: ANN202
        if self._ipr is None:
            from pyroute2 import IPRoute

            with in_namespace(self.netns):
                self._ipr = IPRoute()
        return self._ipr

    def close(self) -> None:
        with self._lock:
            if self._ipr is not None:
                self._ipr.close()
                self._ipr = None

    # -- public interface ---------------------------------------------------------------
    def set_limits(self, tap: str, ingress: BandwidthLimit | None, egress: BandwidthLimit | None) -> None:
        with self._lock:
            idx = self._index(tap, "qos_set")
            self._set_root(tap, idx, ingress)
            self._set_egress(tap, idx, egress)

    def clear(self, tap: str) -> None:
        """Remove both limits (success if there were none or the tap is gone)."""
        with self._lock:
            ipr = self._ip()
            found = ipr.link_lookup(ifname=tap)
            if found:
                self._set_root(tap, found[0], None)
                self._set_egress(tap, found[0], None)
            else:
                self._delete_ifb(tap)

    def limits(self, tap: str) -> PortLimits:
        """What the kernel holds now (rates only; bursts are not read back)."""
        with self._lock:
            idx = self._index(tap, "qos_get")
            ingress = self._tbf_rate(idx)
            egress = None
            if self._redirects_to_ifb(idx):
                ifb = self._ip().link_lookup(ifname=ifb_name(tap))
                egress = self._tbf_rate(ifb[0]) if ifb else None
            elif self._filters(idx):
                egress = self._police_rate(idx)
            return PortLimits(ingress=ingress, egress=egress)

    def _link_kinds(self) -> dict[int, tuple[str, str]]:
        """index -> (name, kind) of every link, from the raw dump: pyroute2 decodes every
        attribute of every link (~1 ms each), which cost an agent restart with 1200 taps
        more than a second."""
        from lbtap.drivers.host.netlink_dump import RawLinks, parse

        if self._given_ipr:
            out = {}
            for msg in self._ip().get_links():
                info = msg.get_attr("IFLA_LINKINFO")
                out[msg["index"]] = (msg.get_attr("IFLA_IFNAME"),
                                     info.get_attr("IFLA_INFO_KIND") if info is not None else "")
            return out
        raw = RawLinks(self.netns)
        try:
            links = [parse(m)[0] for m in raw.dump()]
        finally:
            raw.close()
        return {link.index: (link.name, link.kind) for link in links}

    def limited_taps(self) -> set[str]:
        """Names of the links that hold a root tbf or an ingress qdisc now: the taps an
        earlier run may have limited. Two dumps whatever the number of taps (reading
        ``limits`` tap by tap would cost a dump per tap)."""
        with self._lock:
            ipr = self._ip()
            names = {idx: name for idx, (name, _kind) in self._link_kinds().items()}
            held = set()
            for q in ipr.get_qdiscs():
                kind = q.get_attr("TCA_KIND")
                root = q.get("parent") == 0xFFFFFFFF
                if (kind == "tbf" and root) or kind == "ingress":
                    name = names.get(q["index"])
                    if name is not None:
                        held.add(name)
            return held

    def remove_orphan_ifbs(self) -> list[str]:
        """Delete lbtap's ifb devices (``ifb_name`` patterns only) whose tap is gone, e.g.
        ports deleted while the agent was down; returns their names."""
        with self._lock:
            ipr = self._ip()
            links = {name: (idx, kind) for idx, (name, kind) in self._link_kinds().items()}
            served = set()
            for name in links:
                try:
                    served.add(ifb_name(name))
                except ValueError:
                    pass
            removed = []
            for name, (idx, kind) in sorted(links.items()):
                if kind != "ifb" or not is_lbtap_ifb(name) or name in served:
                    continue
                try:
                    ipr.link("del", index=idx)
                except Exception as e:
                    if getattr(e, "code", None) != errno.ENODEV:
                        raise _err(e, "qos_ifb_delete", name) from e
                removed.append(name)
            return removed

    # -- internals ------------------------------------------------------------------------
    def _index(self, tap: str, op: str) -> int:
        found = self._ip().link_lookup(ifname=tap)
        if not found:
            raise errors.NotFound(f"no link {tap}", op=op, device=tap, code=errno.ENODEV)
        return found[0]

    def _set_root(self, dev: str, idx: int, limit: BandwidthLimit | None) -> None:
        ipr = self._ip()
        try:
            if limit is not None:
                ipr.tc("replace", "tbf", idx, ROOT_HANDLE, **limit.tbf())
            elif self._root_kind(idx) == "tbf":
                ipr.tc("del", index=idx, handle=ROOT_HANDLE, parent=0xFFFFFFFF)
        except Exception as e:  # NetlinkError is not an OSError
            if limit is None and getattr(e, "code", None) in (errno.ENOENT, errno.EINVAL):
                return
            raise _err(e, "qos_root", dev) from e

    def _set_egress(self, tap: str, idx: int, limit: BandwidthLimit | None) -> None:
        ipr = self._ip()
        name = ifb_name(tap)
        if limit is None:
            if self._has_ingress_qdisc(idx):
                try:
                    ipr.tc("del", "ingress", idx, "ffff:")
                except Exception as e:
                    if getattr(e, "code", None) not in (errno.ENOENT, errno.EINVAL):
                        raise _err(e, "qos_ingress", tap) from e
            self._delete_ifb(tap)
            return
        if self.egress_mode == "police":
            self._set_police(tap, idx, limit)
            return
        try:
            self._redirect_to_ifb(tap, idx, name, limit)
        except errors.NotSupported:
            if self.egress_mode != "auto":
                raise
            self._set_police(tap, idx, limit)

    def _set_police(self, tap: str, idx: int, limit: BandwidthLimit) -> None:
        ipr = self._ip()
        try:
            if not self._has_ingress_qdisc(idx):
                ipr.tc("add", "ingress", idx, "ffff:")
            # Always rebuilt: a policer's parameters are not worth diffing, and replacing
            # the single filter keeps the operation idempotent.
            if self._filters(idx):
                ipr.tc("del-filter", index=idx, parent=INGRESS_HANDLE)
            ipr.tc("add-filter", "u32", idx, parent=INGRESS_HANDLE, protocol=ETH_P_ALL, keys=["0x0/0x0+0"],
                   target=0x10001, action={"kind": "police", "rate": limit.rate_bytes, "burst": limit.burst_bytes,
                                           "mtu": 65535, "action": "drop"})
        except Exception as e:
            raise _err(e, "qos_police", tap) from e

    def _redirect_to_ifb(self, tap: str, idx: int, name: str, limit: BandwidthLimit) -> None:
        ipr = self._ip()
        try:
            found = ipr.link_lookup(ifname=name)
            if not found:
                ipr.link("add", ifname=name, kind="ifb")
                found = ipr.link_lookup(ifname=name)
            ifb = found[0]
            ipr.link("set", index=ifb, state="up")
        except Exception as e:
            # No ifb support in the kernel shows up as EOPNOTSUPP (unknown link kind).
            raise _err(e, "qos_ifb", name) from e
        self._set_root(name, ifb, limit)
        try:
            if not self._has_ingress_qdisc(idx):
                ipr.tc("add", "ingress", idx, "ffff:")
            if not self._redirects_to_ifb(idx, ifb):
                # A stale filter (e.g. to an old ifb index) is replaced, not stacked.
                for _ in self._filters(idx):
                    ipr.tc("del-filter", index=idx, parent=INGRESS_HANDLE)
                    break
                ipr.tc("add-filter", "u32", idx, parent=INGRESS_HANDLE, protocol=ETH_P_ALL,
                       keys=["0x0/0x0+0"], target=0x10001,
                       action={"kind": "mirred", "direction": "egress", "action": "redirect", "ifindex": ifb})
        except Exception as e:
            raise _err(e, "qos_redirect", tap) from e

    def _delete_ifb(self, tap: str) -> None:
        ipr = self._ip()
        found = ipr.link_lookup(ifname=ifb_name(tap))
        if found:
            try:
                ipr.link("del", index=found[0])
            except Exception as e:
                if getattr(e, "code", None) != errno.ENODEV:
                    raise _err(e, "qos_ifb_delete", ifb_name(tap)) from e

    def _qdiscs(self, idx: int) -> list:
        return [q for q in self._ip().get_qdiscs(index=idx)]

    def _root_kind(self, idx: int) -> str | None:
        for q in self._qdiscs(idx):
            if q["parent"] == 0xFFFFFFFF:
                return q.get_attr("TCA_KIND")
        return None

    def _has_ingress_qdisc(self, idx: int) -> bool:
        return any(q.get_attr("TCA_KIND") == "ingress" for q in self._qdiscs(idx))

    def _filters(self, idx: int) -> list:
        if not self._has_ingress_qdisc(idx):
            return []
        return list(self._ip().get_filters(index=idx, parent=INGRESS_HANDLE))

    def _redirects_to_ifb(self, idx: int, ifb: int | None = None) -> bool:
        """Whether a u32 filter on the tap's ingress redirects (to ``ifb`` if given)."""
        for f in self._filters(idx):
            opts = f.get_attr("TCA_OPTIONS")
            acts = opts.get_attr("TCA_U32_ACT") if opts is not None else None
            for a in acts.get_attrs("TCA_ACT_PRIO_1") if acts is not None else ():
                if a.get_attr("TCA_ACT_KIND") != "mirred":
                    continue
                parms = a.get_attr("TCA_ACT_OPTIONS").get_attr("TCA_MIRRED_PARMS")
                if ifb is None or parms["ifindex"] == ifb:
                    return True
        return False

    def _police_rate(self, idx: int) -> BandwidthLimit:
        """The egress limit of a tap's ingress filter that does not redirect (police
        mode); 1 kbit/s when its rate cannot be read, so it never reads as "none"."""
        for f in self._filters(idx):
            try:
                acts = f.get_attr("TCA_OPTIONS").get_attr("TCA_U32_ACT")
                for a in acts.get_attrs("TCA_ACT_PRIO_1"):
                    if a.get_attr("TCA_ACT_KIND") == "police":
                        rate = a.get_attr("TCA_ACT_OPTIONS").get_attr("TCA_POLICE_TBF")["rate"]
                        return BandwidthLimit(max(1, round(rate * 8 / 1000)))
            except (AttributeError, KeyError, TypeError, ValueError):
                continue
        return BandwidthLimit(1)

    def _tbf_rate(self, idx: int) -> BandwidthLimit | None:
        for q in self._qdiscs(idx):
            if q["parent"] == 0xFFFFFFFF and q.get_attr("TCA_KIND") == "tbf":
                parms = q.get_attr("TCA_OPTIONS").get_attr("TCA_TBF_PARMS")
                return BandwidthLimit(max(1, round(parms["rate"] * 8 / 1000)))
        return None


def probe_police(netns: str | None, dev: str) -> str | None:
    """None if tc ``police`` works on ``dev`` in ``netns`` (probed with a throwaway
    ingress qdisc, removed again), else the reason it does not."""
    from pyroute2 import IPRoute

    with in_namespace(netns):
        ipr = IPRoute()
    try:
        idx = ipr.link_lookup(ifname=dev)
        if not idx:
            return f"no device {dev} to probe tc police on"
        had_ingress = any(q.get_attr("TCA_KIND") == "ingress" for q in ipr.get_qdiscs(index=idx[0]))
        try:
            if not had_ingress:
                ipr.tc("add", "ingress", idx[0], "ffff:")
            ipr.tc("add-filter", "u32", idx[0], parent=INGRESS_HANDLE, protocol=ETH_P_ALL, keys=["0x0/0x0+0"],
                   prio=49999, target=0x10001,
                   action={"kind": "police", "rate": 125000, "burst": 10000, "mtu": 65535, "action": "drop"})
        except Exception as e:  # noqa: BLE001 - any refusal means "no police here"
            return f"kernel lacks the tc police action: {e}"
        finally:
            if not had_ingress:
                try:
                    ipr.tc("del", "ingress", idx[0], "ffff:")
                except Exception:  # noqa: BLE001
                    pass
        return None
    finally:
        ipr.close()


class FakeQos:
    """In-memory ``TcQosDriver``: ``limits_by_tap[tap]`` is the last ``PortLimits`` set."""

    def __init__(self, netns: str | None = None):
        self.netns = netns
        self.limits_by_tap: dict[str, PortLimits] = {}
        self.calls = 0

    def set_limits(self, tap: str, ingress: BandwidthLimit | None, egress: BandwidthLimit | None) -> None:
        self.calls += 1
        pl = PortLimits(ingress, egress)
        if pl.empty:
            self.limits_by_tap.pop(tap, None)
        else:
            self.limits_by_tap[tap] = pl

    def clear(self, tap: str) -> None:
        self.calls += 1
        self.limits_by_tap.pop(tap, None)

    def limits(self, tap: str) -> PortLimits:
        return self.limits_by_tap.get(tap, PortLimits())

    def limited_taps(self) -> set[str]:
        return {tap for tap, lim in self.limits_by_tap.items() if not lim.empty}

    def remove_orphan_ifbs(self) -> list[str]:
        return []  # no ifb devices here

    def close(self) -> None:
        pass
