"""YAML text, or objects already parsed (dicts) -> the Gateway and Node objects in them.

Accepts what operators and agents actually have at hand: a multi-document file, the
``kind: List`` that ``kubectl get gateways,nodes -o yaml`` prints, typed lists
(``GatewayList``, ``NodeList``) or any mix.  Unrelated kinds (ConfigMaps, the
Kubernetes Gateway API's ``gateway.networking.k8s.io`` Gateways, ...) are skipped
silently; malformed documents and unsupported versions of *our* kinds are skipped
with a warning (only unparseable YAML is an error).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml

from ...errors import ClusterError
from .problems import OBJECT_SKIPPED, Problems

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


def read_objects(text: str, problems: Problems) -> list[KubeObject]:
    """The Raven Gateways and core Nodes of a YAML stream, in document order.

    A document that is not a usable object (no kind, an unsupported version of our
    kinds, ...) is skipped with a warning in ``problems``.

    Raises:
        ClusterError: a YAML syntax error (with line and column).
    """
    return collect_objects(parse_yaml(text), problems, "document")


def collect_objects(documents: Iterable[Any], problems: Problems, unit: str = "object") -> list[KubeObject]:
    """The Raven Gateways and core Nodes among parsed documents, in order, lists flattened.

    ``documents``: dicts as ``yaml.safe_load`` or ``json.loads`` return them (a ``kind: List``,
    a typed list or single objects); ``None`` entries (empty YAML documents) are skipped. Warnings
    name an object by its position: ``{unit} 2 items[3]``. The mappings are read, never changed.
    An entry that is no Kubernetes object, or an unsupported apiVersion of a Gateway or Node, is
    skipped with a warning in ``problems``.
    """
    objects: list[KubeObject] = []
    for number, doc in enumerate((d for d in documents if d is not None), start=1):
        _collect(doc, f"{unit} {number}", None, None, objects, problems)
    return objects


def _collect(doc: Any, where: str, list_kind: str | None, list_api: str | None,
             out: list[KubeObject], problems: Problems) -> None:
    if not isinstance(doc, dict):
        problems.skip(f"{where}: expected a Kubernetes object (a mapping), got {type(doc).__name__}",
                      OBJECT_SKIPPED)
        return
    # Items of a typed list (GatewayList) may omit kind/apiVersion, as API servers return them.
    kind = doc.get("kind", list_kind)
    api_version = doc.get("apiVersion", list_api)
    if not isinstance(kind, str) or not kind:
        problems.skip(f"{where}: kind: missing", OBJECT_SKIPPED, node=_name_of(doc, "Node"))
        return
    if not isinstance(api_version, str) or not api_version:
        problems.skip(f"{where} (kind {kind}): apiVersion: missing", OBJECT_SKIPPED,
                      node=_name_of(doc, kind))
        return

    if kind == "List" or (kind.endswith("List") and "items" in doc):
        items = doc.get("items") or []
        if not isinstance(items, list):
            problems.skip(f"{where} (kind {kind}): items: expected a list", OBJECT_SKIPPED)
            return
        item_kind = kind[: -len("List")] or None
        for i, item in enumerate(items):
            _collect(item, f"{where} items[{i}]", item_kind, api_version if item_kind else None, out, problems)
        return

    obj = KubeObject(kind, api_version, doc, where)
    group, _, version = api_version.rpartition("/")
    if kind == "Gateway" and group == RAVEN_GROUP:
        if version not in RAVEN_VERSIONS:
            expected = " or ".join(f"{RAVEN_GROUP}/{v}" for v in RAVEN_VERSIONS)
            problems.skip(f"{obj.label}: apiVersion: unsupported {api_version!r} (expected {expected})",
                          OBJECT_SKIPPED)
            return
        out.append(obj)
    elif kind == "Node" and group == "":
        # Core group; a CRD that happens to be called Node lives in another group.
        if version != "v1":
            problems.skip(f"{obj.label}: apiVersion: unsupported {api_version!r} (expected v1)",
                          OBJECT_SKIPPED, node=obj.name)
            return
        out.append(obj)


def _name_of(doc: dict[str, Any], kind: Any) -> str | None:
    """The name of a Node document we cannot read otherwise: its own plan is then impossible."""
    if kind != "Node":
        return None
    return KubeObject("Node", "", doc, "").name
