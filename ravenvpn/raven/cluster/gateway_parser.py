"""raven.openyurt.io Gateway dict -> :class:`ParsedGateway` (spec plus the status as given).

The status is kept as written; :mod:`.election` decides what of it still holds.
Field names are Raven's ``raven.openyurt.io/v1beta1`` (v1alpha1 read as OpenYurt's conversion
webhook converts it).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from .documents import KubeObject
from .fields import Field
from .model import DEFAULT_PROXY_PORT, DEFAULT_TUNNEL_PORT, PROXY, TUNNEL, Endpoint, NodeInfo

ENDPOINT_TYPES = (TUNNEL, PROXY)
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


def parse_gateway(obj: KubeObject) -> ParsedGateway:
    """Parse a ``raven.openyurt.io`` Gateway: metadata.name, spec (exposeType, nodeSelector,
    tunnelConfig.Replicas, proxyConfig.Replicas, endpoints) and status (nodes, activeEndpoints).

    Raises:
        ClusterError: the first malformed field, named by its path.
    """
    root = Field(obj.label, "", obj.data)
    name = root.child("metadata").child("name").required_string()
    alpha = obj.api_version.endswith("/v1alpha1")
    spec, status = root.child("spec"), root.child("status")

    # Raven's JSON tag is `Replicas` (capital R); accept the conventional spelling too.
    tunnel_cfg = spec.child("tunnelConfig")
    replicas = tunnel_cfg.first_child("Replicas", "replicas")
    if alpha and not replicas.present:
        replicas = spec.first_child("Replicas", "replicas")  # one v1alpha1 revision had it here
    proxy_replicas = spec.child("proxyConfig").first_child("Replicas", "replicas")

    return ParsedGateway(
        name=name,
        label=obj.label,
        api_version=obj.api_version,
        expose_type=spec.child("exposeType").string("") or "",
        node_selector=_match_labels(spec.child("nodeSelector")),
        tunnel_replicas=replicas.integer(1),
        proxy_replicas=proxy_replicas.integer(1),
        endpoints=tuple(parse_endpoint(f, i, alpha, in_status=False)
                        for i, f in enumerate(spec.child("endpoints").items())),
        status_nodes=_status_nodes(status.child("nodes")),
        status_active=_status_active(status),
    )


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
        public_ip=field.child("publicIP").ip(),
        # publicPort 0 is Go's zero value for "unknown".
        public_port=None if _is_zero(public_port.value) else public_port.port(),
        config=config,
        public_key=_public_key(field.child("config").child("publicKey"),
                               required=etype == TUNNEL and not in_status),
        index=index,
    )


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


def _status_nodes(field: Field) -> tuple[NodeInfo, ...] | None:
    entries = field.items()
    if not entries:  # omitempty: an empty list means "not computed yet"
        return None
    return tuple(
        NodeInfo(
            node_name=entry.child("nodeName").required_string(),
            private_ip=entry.child("privateIP").required_ip(),
            subnets=entry.child("subnets").cidr_list(),
        )
        for entry in entries
    )


def _status_active(status: Field) -> tuple[StatusEndpoint, ...]:
    plural, singular = status.child("activeEndpoints"), status.child("activeEndpoint")
    if plural.present and singular.present:
        raise singular.error("given together with status.activeEndpoints; keep one")
    # v1alpha1 had a single activeEndpoint; the seeds also show v1alpha1 with the plural.
    fields = plural.items() if plural.present else ([singular] if singular.present else [])
    return tuple(StatusEndpoint(parse_endpoint(f, i, alpha=False, in_status=True), f.path)
                 for i, f in enumerate(fields))


def _is_zero(value: object) -> bool:
    return type(value) is int and value == 0  # not False, which also == 0
