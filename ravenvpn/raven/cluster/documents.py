"""YAML text, or objects already parsed (dicts) -> the Gateway and Node objects in them.

Accepts what operators and agents actually have at hand: a multi-document file, the
``kind: List`` that ``kubectl get gateways,nodes -o yaml`` prints, typed lists
(``GatewayList``, ``NodeList``) or any mix.  Unrelated kinds (ConfigMaps, the
Kubernetes Gateway API's ``gateway.networking.k8s.io`` Gateways, ...) are skipped;
malformed documents and unsupported versions of *our* kinds are errors.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml

from ...errors import ClusterError

RAVEN_GROUP = "raven.openyurt.io"
RAVEN_VERSIONS = ("v1beta1", "v1alpha1")

try:  # libyaml is ~10x faster on big `kubectl get nodes` dumps; semantics are the same
    _Loader: Any = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - depends on how PyYAML was built
    _Loader = yaml.SafeLoader


@dataclass(frozen=True)
class KubeObject:
    """One Gateway or Node object as found in the input, not yet parsed.

    ``data`` is the object's dict as given (never changed); ``where`` locates it for errors on
    unnamed objects (``document 2``, ``object 1 items[3]``).
    """

    kind: str          # "Gateway" or "Node"
    api_version: str
    data: dict[str, Any]
    where: str         # "document 2", "document 1 items[3]": for errors on unnamed objects

    @property
    def name(self) -> str | None:
        """``metadata.name`` if it is a non-empty string, else None (the parsers report it)."""
        meta = self.data.get("metadata")
        name = meta.get("name") if isinstance(meta, dict) else None
        return name if isinstance(name, str) and name else None

    @property
    def label(self) -> str:
        """How errors refer to this object: ``Gateway gw-cloud`` or ``Gateway (document 2)``."""
        return f"{self.kind} {self.name}" if self.name else f"{self.kind} ({self.where})"


def parse_yaml(text: str) -> list[Any]:
    """All non-empty documents of a YAML stream (safe loading: plain dicts, lists, scalars).

    Raises:
        ClusterError: a syntax error, as one line with line and column.
    """
    try:
        return [doc for doc in yaml.load_all(text, Loader=_Loader) if doc is not None]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        reason = exc.problem or exc.context or "invalid YAML"
        raise ClusterError(f"YAML syntax error{where}: {reason}") from None
    except yaml.YAMLError as exc:
        raise ClusterError(f"YAML error: {exc}") from None


def read_objects(text: str) -> list[KubeObject]:
    """The Raven Gateways and core Nodes of a YAML stream, in document order.

    Raises:
        ClusterError: a YAML syntax error (with line and column), a document that is no Kubernetes
            object, or an unsupported apiVersion of a Gateway or Node.
    """
    return collect_objects(parse_yaml(text), "document")


def collect_objects(documents: Iterable[Any], unit: str = "object") -> list[KubeObject]:
    """The Raven Gateways and core Nodes among parsed documents, in order, lists flattened.

    ``documents``: dicts as ``yaml.safe_load`` or ``json.loads`` return them (a ``kind: List``,
    a typed list or single objects); ``None`` entries (empty YAML documents) are skipped. Errors name
    an object by its position: ``{unit} 2 items[3]``. The mappings are read, never changed.

    Raises:
        ClusterError: an entry that is no Kubernetes object, or an unsupported apiVersion of a
            Gateway or Node.
    """
    objects: list[KubeObject] = []
    for number, doc in enumerate((d for d in documents if d is not None), start=1):
        _collect(doc, f"{unit} {number}", None, None, objects)
    return objects


def _collect(doc: Any, where: str, list_kind: str | None, list_api: str | None,
             out: list[KubeObject]) -> None:
    if not isinstance(doc, dict):
        raise ClusterError(f"{where}: expected a Kubernetes object (a mapping), "
                           f"got {type(doc).__name__}")
    # Items of a typed list (GatewayList) may omit kind/apiVersion, as API servers return them.
    kind = doc.get("kind", list_kind)
    api_version = doc.get("apiVersion", list_api)
    if not isinstance(kind, str) or not kind:
        raise ClusterError(f"{where}: kind: missing")
    if not isinstance(api_version, str) or not api_version:
        raise ClusterError(f"{where} (kind {kind}): apiVersion: missing")

    if kind == "List" or (kind.endswith("List") and "items" in doc):
        items = doc.get("items") or []
        if not isinstance(items, list):
            raise ClusterError(f"{where} (kind {kind}): items: expected a list")
        item_kind = kind[: -len("List")] or None
        for i, item in enumerate(items):
            _collect(item, f"{where} items[{i}]", item_kind, api_version if item_kind else None, out)
        return

    obj = KubeObject(kind, api_version, doc, where)
    group, _, version = api_version.rpartition("/")
    if kind == "Gateway" and group == RAVEN_GROUP:
        if version not in RAVEN_VERSIONS:
            expected = " or ".join(f"{RAVEN_GROUP}/{v}" for v in RAVEN_VERSIONS)
            raise ClusterError(f"{obj.label}: apiVersion: unsupported {api_version!r} "
                               f"(expected {expected})")
        out.append(obj)
    elif kind == "Node" and group == "":
        # Core group; a CRD that happens to be called Node lives in another group.
        if version != "v1":
            raise ClusterError(f"{obj.label}: apiVersion: unsupported {api_version!r} "
                               "(expected v1)")
        out.append(obj)
