"""raven.openyurt.io Gateway dict -> :class:`ParsedGateway` (spec plus the status as given).

The status is kept as written; :mod:`.election` and :mod:`.checks` decide what of it still holds.
Field names are Raven's ``raven.openyurt.io/v1beta1`` (v1alpha1 read as OpenYurt's conversion
webhook converts it).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, replace
from typing import Any

from .addresses import parse_ip
from .documents import KubeObject
from ...errors import ClusterError
from .fields import Field
from .model import DEFAULT_PROXY_PORT, DEFAULT_TUNNEL_PORT, PROXY, TUNNEL, Endpoint, NodeInfo
from .problems import OBJECT_SKIPPED, Problems

ENDPOINT_TYPES = (TUNNEL, PROXY)
EXPOSE_TYPES = ("PublicIP", "LoadBalancer")   # Raven's ExposeType values
DEFAULT_PORTS = {TUNNEL: DEFAULT_TUNNEL_PORT, PROXY: DEFAULT_PROXY_PORT}
WG_KEY_LEN = 32


@dataclass(frozen=True)
class StatusEndpoint:
    """An entry of status.activeEndpoints as written; only identifies the current choice."""

    endpoint: Endpoint
    path: str            # "status.activeEndpoints[0]"


@dataclass(frozen=True)
class ParsedGateway:
    """A Gateway's fields, checked one by one but not yet against other objects (:mod:`.checks`)."""

    name: str
    label: str           # "Gateway gw-x", for errors
    api_version: str
    expose_type: str
    node_selector: tuple[tuple[str, str], ...]
    tunnel_replicas: int
    proxy_replicas: int
    endpoints: tuple[Endpoint, ...]
    status_nodes: tuple[NodeInfo, ...] | None   # None: absent, derive from Node objects
    status_active: tuple[StatusEndpoint, ...]


def parse_gateway(obj: KubeObject, problems: Problems) -> ParsedGateway | None:
    """The Gateway as written, or None (with a warning) when it has no usable name.

    A malformed field is skipped with a warning naming it: a malformed endpoint
    (or status entry) is left out whole, since half an endpoint is guesswork; a
    malformed setting falls back to its default.  A tunnel endpoint left out makes
    its node's own plan an error (see :mod:`.problems`).
    """
    root = Field(obj.label, "", obj.data)
    name = problems.attempt(lambda: root.child("metadata").child("name").required_string(), None,
                            OBJECT_SKIPPED)
    if name is None:
        return None
    alpha = obj.api_version.endswith("/v1alpha1")
    spec = problems.mapping(root.child("spec"))
    status = problems.mapping(root.child("status"))

    # Raven's JSON tag is `Replicas` (capital R); accept the conventional spelling too.
    def replicas_field() -> Field:
        field = spec.child("tunnelConfig").first_child("Replicas", "replicas")
        if alpha and not field.present:
            field = spec.first_child("Replicas", "replicas")  # one v1alpha1 revision had it here
        return field

    return ParsedGateway(
        name=name,
        label=obj.label,
        api_version=obj.api_version,
        expose_type=_expose_type(spec.child("exposeType"), problems),
        node_selector=problems.attempt(lambda: _match_labels(spec.child("nodeSelector")), (), "ignored"),
        tunnel_replicas=problems.attempt(lambda: replicas_field().integer(1), 1, "1 used"),
        proxy_replicas=problems.attempt(
            lambda: spec.child("proxyConfig").first_child("Replicas", "replicas").integer(1), 1, "1 used"),
        endpoints=_spec_endpoints(spec.child("endpoints"), alpha, problems),
        status_nodes=_status_nodes(status.child("nodes"), problems),
        status_active=_status_active(status, problems),
    )


def _expose_type(field: Field, problems: Problems) -> str:
    """``spec.exposeType``: "PublicIP", "LoadBalancer" or "" (not exposed). Another spelling of one of
    them (``publicip``) is that value, with a warning: an exposed gateway is the preferred relay
    (:func:`~ravenvpn.raven.plan.topology.find_relay`), and ignoring it moves every relayed flow to
    whichever gateway without NAT sorts first. An unknown value is ignored with a warning."""
    text = (problems.attempt(lambda: field.string(""), "", "ignored") or "").strip()
    if not text or text in EXPOSE_TYPES:
        return text
    canonical = next((t for t in EXPOSE_TYPES if t.lower() == text.lower()), None)
    if canonical is not None:
        problems.skip(f"{field.owner}: {field.path}: {text!r} is spelt {canonical!r}", f"read as {canonical!r}")
        return canonical
    problems.skip(f"{field.owner}: {field.path}: unknown exposeType {text!r} "
                  f"(expected {' or '.join(EXPOSE_TYPES)})", "ignored")
    return ""


def _spec_endpoints(field: Field, alpha: bool, problems: Problems) -> tuple[Endpoint, ...]:
    endpoints = []
    for i, entry in enumerate(problems.attempt(field.items, [], "Gateway has no endpoints")):
        try:
            endpoints.append(parse_endpoint(entry, i, alpha, in_status=False))
        except ClusterError as exc:
            problems.skip(str(exc), "endpoint skipped", node=_tunnel_node(entry, alpha))
    return tuple(endpoints)


def _tunnel_node(entry: Field, alpha: bool) -> str | None:
    """The node of an unreadable endpoint that may be its tunnel endpoint (it then cannot plan)."""
    raw = entry.value if isinstance(entry.value, dict) else {}
    node, etype = raw.get("nodeName"), raw.get("type")
    if etype is None and alpha:
        etype = TUNNEL
    # A proxy endpoint, or one of a type we do not know, is not this node's tunnel.
    if etype is not None and etype != TUNNEL:
        return None
    return node.strip() if isinstance(node, str) and node.strip() else None


def parse_endpoint(field: Field, index: int, alpha: bool, *, in_status: bool) -> Endpoint:
    """One ``spec.endpoints[index]`` (or a ``status.activeEndpoints`` entry with ``in_status``):
    nodeName, type, port, underNAT, natType, publicIP, publicPort, config (publicKey decoded).
    v1alpha1 (``alpha``) and status entries default the type to tunnel; port 0 means the default.

    Raises:
        ClusterError: the first malformed field; an unknown type; a tunnel endpoint of the spec
            without a 32-byte base64 ``config.publicKey``.
    """
    type_field = field.child("type")
    # v1alpha1 had no type: every endpoint was a tunnel (OpenYurt's conversion says so).
    # Status entries are observations, so be as lenient there.
    if alpha or in_status:
        etype = type_field.string(TUNNEL)
    else:
        etype = type_field.string(required=True)
    if etype not in ENDPOINT_TYPES:
        raise type_field.error(f"unknown endpoint type {etype!r} (expected tunnel or proxy)")
    assert etype is not None

    port, public_port = field.child("port"), field.child("publicPort")
    config = _config(field.child("config"))
    return Endpoint(
        node_name=field.child("nodeName").required_string(),
        type=etype,
        # 0 is Go's zero value: "use the default", as Raven's defaulting webhook does.
        port=DEFAULT_PORTS[etype] if _is_zero(port.value) else port.port(DEFAULT_PORTS[etype]),
        under_nat=field.child("underNAT").boolean(False),
        nat_type=field.child("natType").string("") or "",
        **_public_address(field.child("publicIP")),
        # publicPort 0 is Go's zero value for "unknown".
        public_port=None if _is_zero(public_port.value) else public_port.port(),
        config=config,
        public_key=_public_key(field.child("config").child("publicKey"),
                               required=etype == TUNNEL and not in_status),
        index=index,
    )


def _public_address(field: Field) -> dict[str, Any]:
    """``publicIP`` as Raven writes it (an address) or as an operator may (a DNS name, as for
    ``wg``'s endpoints): {"public_ip": ...} or {"public_host": ...}; {} when absent."""
    text = (field.string("") or "").strip()
    if not text:
        return {}
    # An IPv6 address in brackets, as in a `host:port` endpoint (`[2001:db8::1]`): the address.
    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        return {"public_ip": parse_ip(bare)}
    except ValueError:
        pass
    if not is_hostname(text):
        raise field.error(f"invalid IP address or hostname {text!r}")
    return {"public_host": text.rstrip(".").lower()}


def is_hostname(text: str) -> bool:
    """RFC 1123 host name syntax (letters, digits, inner hyphens; labels of 1-63, 253 in all); a
    last label of digits only is a mistyped IPv4 address (``198.51.100.300``), not a name."""
    labels = text.rstrip(".").split(".")
    return (0 < len(text.rstrip(".")) <= 253 and all(_LABEL.fullmatch(label) for label in labels)
            and not labels[-1].isdigit())


_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def _public_key(field: Field, *, required: bool) -> bytes | None:
    text = field.string(required=required)
    if text is None:
        return None
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise field.error(f"invalid WireGuard public key {text!r} (not base64)") from None
    if len(key) != WG_KEY_LEN:
        raise field.error(f"invalid WireGuard public key {text!r} "
                          f"(decodes to {len(key)} bytes, expected {WG_KEY_LEN})")
    return key


def _config(field: Field) -> tuple[tuple[str, str], ...]:
    mapping = field.mapping() or {}
    pairs = []
    for key, value in mapping.items():
        # map[string]string in Go; tolerate an unquoted `enable-l3-tunnel: true`.
        if isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = field.keyed(str(key)).string("") or ""
        pairs.append((str(key), text))
    return tuple(sorted(pairs))


def _match_labels(field: Field) -> tuple[tuple[str, str], ...]:
    labels = field.child("matchLabels")
    mapping = labels.mapping() or {}
    return tuple(sorted((str(k), labels.keyed(str(k)).string("") or "") for k in mapping))


def _status_nodes(field: Field, problems: Problems) -> tuple[NodeInfo, ...] | None:
    entries = problems.attempt(field.items, [], "status.nodes ignored")
    if not entries:  # omitempty: an empty list means "not computed yet"
        return None
    infos = []
    for entry in entries:
        info = problems.attempt(lambda: NodeInfo(
            node_name=entry.child("nodeName").required_string(),
            private_ip=entry.child("privateIP").required_ip(),
        ), None, "entry skipped")
        if info is None:
            continue
        # yurt-manager writes `subnets: [""]` for a node without spec.podCIDR: skip the entry
        # of the list, keep the node (its own IP is still routed).
        subnets = problems.attempt(entry.child("subnets").items, [], "skipped")
        parsed = (problems.cidr(s, "skipped") for s in subnets)
        infos.append(replace(info, subnets=tuple(c for c in parsed if c is not None)))
    return tuple(infos)


def _status_active(status: Field, problems: Problems) -> tuple[StatusEndpoint, ...]:
    plural, singular = status.child("activeEndpoints"), status.child("activeEndpoint")
    if plural.present and singular.present:
        problems.skip(str(singular.error("given together with status.activeEndpoints")), "ignored")
    # v1alpha1 had a single activeEndpoint; the seeds also show v1alpha1 with the plural.
    fields = (problems.attempt(plural.items, [], "ignored") if plural.present
              else [singular] if singular.present else [])
    # Status entries only say who is active now; election re-checks them, so a bad one is dropped.
    parsed = (problems.attempt(lambda: StatusEndpoint(parse_endpoint(f, i, alpha=False, in_status=True),
                                                      f.path), None, "entry ignored")
              for i, f in enumerate(fields))
    return tuple(p for p in parsed if p is not None)


def _is_zero(value: object) -> bool:
    return type(value) is int and value == 0  # not False, which also == 0
