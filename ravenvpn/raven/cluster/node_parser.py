"""core/v1 Node dict -> :class:`Node`.

A malformed field is skipped with a warning (the rest of the Node is kept, so the
other nodes still route to it) and makes the node's own plan an error: a node must
not run on a half-read description of itself.
"""

from __future__ import annotations

from .addresses import IPAddress, IPNetwork
from .documents import KubeObject
from .fields import Field
from .model import GATEWAY_LABEL, Node
from .problems import OBJECT_SKIPPED, Problems


def parse_node(obj: KubeObject, problems: Problems) -> Node | None:
    """The Node, or None (with a warning) when it has no usable name."""
    root = Field(obj.label, "", obj.data)
    name = problems.attempt(lambda: root.child("metadata").child("name").required_string(), None,
                            OBJECT_SKIPPED)
    if name is None:
        return None
    status = problems.mapping(root.child("status"), node=name)
    label = problems.attempt(lambda: root.child("metadata").child("labels").keyed(GATEWAY_LABEL).string(),
                             None, "label ignored", node=name)
    return Node(
        name=name,
        gateway_label=(label or "").strip() or None,
        internal_ip=_internal_ip(status, problems, name),
        pod_cidrs=_pod_cidrs(problems.mapping(root.child("spec"), node=name), problems, name),
        ready=problems.attempt(lambda: _is_ready(status), False, "taken as not Ready", node=name),
    )


def _internal_ip(status: Field, problems: Problems, name: str) -> IPAddress | None:
    # Raven's controller takes the first InternalIP as the node's privateIP.
    for address in problems.attempt(status.child("addresses").items, [], "skipped", node=name):
        is_internal = problems.attempt(lambda: address.child("type").string() == "InternalIP", False,
                                       "address skipped", node=name)
        if is_internal:
            text = address.child("address").value
            if isinstance(text, str) and not text.strip():
                # An empty address is no address (nothing of the node is misread): the next one counts.
                problems.skip(f"{address.owner}: {address.path}.address: empty", "address skipped")
                continue
            ip = problems.attempt(lambda: address.child("address").ip(required=True), None,
                                  "address skipped", node=name)
            if ip is not None:
                return ip
    return None


def _pod_cidrs(spec: Field, problems: Problems, name: str) -> tuple[IPNetwork, ...]:
    cidrs = _cidr_list(spec.child("podCIDRs"), problems, name)
    single = spec.child("podCIDR")
    if not single.present:
        return cidrs
    cidr = problems.cidr(single, "skipped", node=name)
    if cidr is None:
        return cidrs
    # Kubernetes keeps podCIDR == podCIDRs[0]; anything else is a hand-edit gone wrong.
    if cidrs and cidrs[0] != cidr:
        problems.skip(f"{single.owner}: {single.path}: {cidr} differs from spec.podCIDRs[0] {cidrs[0]}",
                      "spec.podCIDRs used", node=name)
    return cidrs or (cidr,)


def _cidr_list(field: Field, problems: Problems, name: str) -> tuple[IPNetwork, ...]:
    items = problems.attempt(field.items, [], "skipped", node=name)
    parsed = (problems.cidr(item, "skipped", node=name) for item in items)
    return tuple(c for c in parsed if c is not None)


def _is_ready(status: Field) -> bool:
    # As in yurt-manager: Ready only with an explicit Ready=True condition.
    for condition in status.child("conditions").items():
        if condition.child("type").string() == "Ready":
            value = condition.child("status").value
            return value is True or (isinstance(value, str) and value.lower() == "true")
    return False
