"""The Raven layer: what makes a node of an OpenYurt Raven cluster out of the WireGuard dataplane.

Three parts, one subpackage each, in the order data flows:

- :mod:`.cluster`: cluster input. Raven ``Gateway`` and core ``Node`` objects (YAML or dicts) become a
  validated, immutable :class:`~.cluster.model.Cluster`; membership and the election of active
  endpoints are derived as Raven's controller does where a Gateway has no status.
- :mod:`.plan`: planning. A pure, deterministic :func:`~.plan.planner.plan` turns the cluster into one
  node's :class:`~.plan.nodeplan.NodePlan`: role, WireGuard peers, routes, rules, sysctls.
- :mod:`.node`: the node runtime. Two drivers apply a plan idempotently (the WireGuard device and the
  kernel's routes), an :class:`~.node.agent.Agent` keeps them converged, and the records under the
  state directory let ``ravenvpn status``/``down`` find it.
"""
