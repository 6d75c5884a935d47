"""Sans-IO core of the L2 agent.

Data flows one way:

* ``diff.scan_diff`` -- which taps appeared, went away, changed (pure);
* ``hostview.HostView`` -- the observed links, addresses and routes;
* ``plan.plan`` -- desired wiring + host view -> ordered ``ops`` (pure, missing steps only);
* ``executor.apply`` -- the only code that calls a ``HostDriver``; failures are scoped to
  the devices that depend on the failed op;
* ``retry.Backoff`` -- per-key capped exponential backoff, deterministic in ``now``;
* ``reporter.Reporter`` -- duplicate-free, batched ``update_device_list`` state;
* ``details.DetailsFlow`` -- asking the server for device details, taking answers and
  pushes (a mixin of ``AgentCore``);
* ``agent.AgentCore`` -- ties them together behind the contract in ``docs/ARCHITECTURE.md``.
"""
