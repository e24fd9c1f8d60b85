"""core/v1 Node dict -> :class:`Node`."""

from __future__ import annotations

from .documents import KubeObject
from .fields import Field
from .model import GATEWAY_LABEL, Node


def parse_node(obj: KubeObject) -> Node:
    """Parse a core/v1 Node: metadata.name, the ``raven.openyurt.io/gateway`` label, the first
    ``status.addresses[type=InternalIP]``, ``spec.podCIDRs`` (else ``spec.podCIDR``) and the Ready
    condition (Ready only with an explicit status "True", as yurt-manager reads it).

    Raises:
        ClusterError: the first malformed field; podCIDR differing from podCIDRs[0].
    """
    root = Field(obj.label, "", obj.data)
    name = root.child("metadata").child("name").required_string()
    label = root.child("metadata").child("labels").keyed(GATEWAY_LABEL).string()
    status = root.child("status")
    return Node(
        name=name,
        gateway_label=(label or "").strip() or None,
        internal_ip=_internal_ip(status),
        pod_cidrs=_pod_cidrs(root.child("spec")),
        ready=_is_ready(status),
    )


def _internal_ip(status: Field):
    # Raven's controller takes the first InternalIP as the node's privateIP.
    first = None
    for address in status.child("addresses").items():
        if address.child("type").string() == "InternalIP":
            ip = address.child("address").ip(required=True)
            first = first or ip
    return first


def _pod_cidrs(spec: Field):
    cidrs = spec.child("podCIDRs").cidr_list()
    single = spec.child("podCIDR")
    if single.present:
        cidr = single.cidr()
        # Kubernetes keeps podCIDR == podCIDRs[0]; anything else is a hand-edit gone wrong.
        if cidrs and cidrs[0] != cidr:
            raise single.error(f"{cidr} differs from spec.podCIDRs[0] {cidrs[0]}")
        return cidrs or (cidr,)
    return cidrs


def _is_ready(status: Field) -> bool:
    # As in yurt-manager: Ready only with an explicit Ready=True condition.
    for condition in status.child("conditions").items():
        if condition.child("type").string() == "Ready":
            value = condition.child("status").value
            return value is True or (isinstance(value, str) and value.lower() == "true")
    return False
