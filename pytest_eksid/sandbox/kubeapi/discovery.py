"""Discovery and OpenAPI: what clients read before any verb, and content negotiation.

Aggregated discovery (``apidiscovery.k8s.io/v2``) and the legacy ``APIVersions``,
``APIGroupList`` and ``APIResourceList``; the OpenAPI v3 index and per-group-version documents;
and which representation (JSON, ``Table``, ``PartialObjectMetadata``) an ``Accept`` header asks for.
"""

from __future__ import annotations

from pytest_eksid.sandbox.kubeapi.resources import SUBRESOURCE_VERBS, Obj, ResourceType, api_groups


def _subresource_kind(rt: ResourceType, sub: str) -> tuple[str, str, str]:
    if sub == "token":
        return ("authentication.k8s.io", "v1", "TokenRequest")
    return ("", "v1", "PodExecOptions") if sub == "exec" else (rt.group, rt.version, rt.kind)


def discovery_resources(group: str, version: str) -> Obj:
    """The legacy ``APIResourceList`` of a group version."""
    resources: list[Obj] = []
    for rt in api_groups().get(group, {}).get(version, []):
        entry: Obj = {
            "name": rt.plural,
            "singularName": rt.singular,
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": list(rt.verbs),
        }
        if rt.short_names:
            entry["shortNames"] = list(rt.short_names)
        if rt.categories:
            entry["categories"] = list(rt.categories)
        resources.append(entry)
        for sub in rt.subresources:
            g, v, kind = _subresource_kind(rt, sub)
            sub_entry: Obj = {
                "name": f"{rt.plural}/{sub}",
                "singularName": "",
                "namespaced": rt.namespaced,
                "kind": kind,
                "verbs": SUBRESOURCE_VERBS[sub],
            }
            if (g, v) != (rt.group, rt.version):
                sub_entry.update({"group": g, "version": v})
            resources.append(sub_entry)
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}


def legacy_group(group: str, versions: dict[str, list[ResourceType]]) -> Obj:
    gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": gvs, "preferredVersion": gvs[0]}


def discovery_groups() -> Obj:
    groups = [legacy_group(g, vs) for g, vs in api_groups().items() if g]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def discovery_aggregated(core: bool) -> Obj:
    """``apidiscovery.k8s.io/v2`` ``APIGroupDiscoveryList`` of ``/api`` (core) or ``/apis``."""
    items = []
    for group, versions in api_groups().items():
        if (group == "") != core:
            continue
        out_versions = []
        for version, rts in versions.items():
            resources = []
            for rt in rts:
                entry: Obj = {
                    "resource": rt.plural,
                    "responseKind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
                    "scope": "Namespaced" if rt.namespaced else "Cluster",
                    "singularResource": rt.singular,
                    "verbs": list(rt.verbs),
                }
                if rt.short_names:
                    entry["shortNames"] = list(rt.short_names)
                if rt.categories:
                    entry["categories"] = list(rt.categories)
                if rt.subresources:
                    entry["subresources"] = [
                        {
                            "subresource": sub,
                            "responseKind": dict(
                                zip(("group", "version", "kind"), _subresource_kind(rt, sub), strict=True)
                            ),
                            "verbs": SUBRESOURCE_VERBS[sub],
                        }
                        for sub in rt.subresources
                    ]
                resources.append(entry)
            out_versions.append({"version": version, "resources": resources, "freshness": "Current"})
        items.append({"metadata": {"name": group, "creationTimestamp": None}, "versions": out_versions})
    return {"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items}


_OPENAPI_PARAMS = [
    {"name": n, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
    for n in ("dryRun", "fieldManager", "fieldValidation", "force")
]


def openapi_v3_index() -> Obj:
    """``/openapi/v3``: one document per group version."""
    paths = {}
    for group, versions in api_groups().items():
        for version in versions:
            gv = f"apis/{group}/{version}" if group else f"api/{version}"
            paths[gv] = {"serverRelativeURL": f"/openapi/v3/{gv}?hash=sandbox"}
    return {"paths": paths}


def openapi_v3_document(group: str, version: str) -> Obj:
    """A group version's OpenAPI v3 document: operations without schemas. Enough for kubectl to
    see that every kind's PATCH takes ``fieldValidation`` (so it validates on the server and
    needs no schema); not enough for ``kubectl explain``."""
    prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
    paths: Obj = {}
    for rt in api_groups().get(group, {}).get(version, []):
        gvk = {"group": rt.group, "version": rt.version, "kind": rt.kind}
        base = f"{prefix}/namespaces/{{namespace}}/{rt.plural}" if rt.namespaced else f"{prefix}/{rt.plural}"

        def operation(verb: str, gvk: Obj = gvk, rt: ResourceType = rt) -> Obj:
            return {
                "operationId": f"{verb}{rt.kind}",
                "parameters": _OPENAPI_PARAMS,
                "responses": {"200": {"description": "OK"}},
                "x-kubernetes-action": verb,
                "x-kubernetes-group-version-kind": gvk,
            }

        paths[base] = {"get": operation("list"), "post": operation("post")}
        paths[base + "/{name}"] = {
            verb: operation(action)
            for verb, action in (("get", "get"), ("put", "put"), ("patch", "patch"), ("delete", "delete"))
        }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0-eks-sandbox"},
        "paths": paths,
        "components": {"schemas": {}},
    }


def _media_types(accept: str) -> list[tuple[str, dict[str, str]]]:
    out = []
    for part in accept.split(","):
        mime, *params = (p.strip() for p in part.split(";"))
        out.append((mime.lower(), {k.strip(): v.strip() for k, _, v in (p.partition("=") for p in params)}))
    return out


def negotiate(accept: str, *, discovery: bool = False) -> tuple[str, str]:
    """(representation, content type): ``json``, ``table``, ``partial`` or ``aggregated``."""
    for mime, params in _media_types(accept or "application/json"):
        if mime not in ("application/json", "*/*", "application/*"):
            continue
        target = (params.get("as"), params.get("g"), params.get("v"))
        if discovery and target == ("APIGroupDiscoveryList", "apidiscovery.k8s.io", "v2"):
            return "aggregated", "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
        if not discovery and target[0] == "Table" and target[1] == "meta.k8s.io" and target[2] in ("v1", "v1beta1"):
            return f"table/{target[2]}", f"application/json;as=Table;v={target[2]};g=meta.k8s.io"
        partial = target[0] in ("PartialObjectMetadata", "PartialObjectMetadataList")
        if not discovery and partial and target[1] == "meta.k8s.io" and target[2] in ("v1", "v1beta1"):
            return f"partial/{target[2]}", f"application/json;as={target[0]};v={target[2]};g=meta.k8s.io"
        if target[0] is None:
            return "json", "application/json"
    return "json", "application/json"
