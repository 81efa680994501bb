"""RabbitMQ's definitions document (``GET/POST /api/definitions``): pure shaping helpers."""

from __future__ import annotations

from typing import Any

from warren.errors import precondition_failed

RABBIT_SHA256 = "rabbit_password_hashing_sha256"
DOCUMENT_KEYS = ("users", "vhosts", "permissions", "policies", "queues", "exchanges", "bindings")


def export_document(
    version: str,
    users: list[dict[str, Any]],
    vhosts: list[dict[str, Any]],
    permissions: list[dict[str, Any]],
    policies: list[dict[str, Any]],
    queues: list[dict[str, Any]],
    exchanges: list[dict[str, Any]],
    bindings: list[dict[str, Any]],
) -> dict[str, Any]:
    """The document RabbitMQ 3.10 exports, with only the fields its import reads."""
    return {
        "rabbit_version": "3.10.8",
        "rabbitmq_version": "3.10.8",
        "product_name": "Warren",
        "product_version": version,
        "users": [
            {"name": u["name"], "password_hash": u["password_hash"],
             "hashing_algorithm": u["hashing_algorithm"], "tags": u["tags"], "limits": {}}
            for u in users
        ],
        "vhosts": [{"name": v["name"], **({"metadata": v["metadata"]} if v["default_queue_type"] != "classic" else {})}
                   for v in vhosts],
        "permissions": permissions,
        "topic_permissions": [],
        "parameters": [],
        "global_parameters": [],
        "policies": policies,
        "queues": [
            {"name": q["name"], "vhost": q["vhost"], "durable": q["durable"],
             "auto_delete": q["auto_delete"], "arguments": q["arguments"]}
            for q in queues
        ],
        "exchanges": [
            {"name": x["name"], "vhost": x["vhost"], "type": x["type"], "durable": x["durable"],
             "auto_delete": x["auto_delete"], "internal": x["internal"], "arguments": x["arguments"]}
            for x in exchanges
        ],
        "bindings": [
            {"source": b["source"], "vhost": b["vhost"], "destination": b["destination"],
             "destination_type": b["destination_type"], "routing_key": b["routing_key"],
             "arguments": b["arguments"]}
            for b in bindings
        ],
    }


# per section: required string fields, then optional fields with their JSON types
_STR, _BOOL, _OBJ, _INT = (str,), (bool,), (dict,), (int,)
_FIELDS: dict[str, tuple[tuple[str, ...], dict[str, tuple[type, ...]]]] = {
    "users": (("name",), {"password_hash": _STR, "hashing_algorithm": _STR, "tags": (list, str)}),
    "vhosts": (("name",), {}),
    "permissions": (("user", "vhost", "configure", "write", "read"), {}),
    "policies": (("vhost", "name", "pattern"), {"definition": _OBJ, "priority": _INT, "apply-to": _STR}),
    "queues": (("name", "vhost"), {"durable": _BOOL, "auto_delete": _BOOL, "arguments": _OBJ}),
    "exchanges": (("name", "vhost", "type"), {"durable": _BOOL, "auto_delete": _BOOL, "internal": _BOOL,
                                              "arguments": _OBJ}),
    "bindings": (("source", "vhost", "destination", "destination_type"), {"routing_key": _STR,
                                                                            "arguments": _OBJ}),
}


def validate_document(document: Any) -> dict[str, Any]:
    """A 400 (precondition) naming the first entry that an import could not apply, before
    anything is imported: every section a list of objects with the fields RabbitMQ writes."""
    if not isinstance(document, dict):
        raise precondition_failed("definitions must be a JSON object")
    for key in DOCUMENT_KEYS:
        if key in document and not isinstance(document[key], list):
            raise precondition_failed(f"definitions key '{key}' must be a list")
        required, optional = _FIELDS[key]
        for index, item in enumerate(document.get(key, [])):
            where = f"definitions {key}[{index}]"
            if not isinstance(item, dict):
                raise precondition_failed(f"{where} must be an object")
            for field in required:
                if not isinstance(item.get(field), str):
                    raise precondition_failed(f"{where} needs '{field}' (a string)")
            for field, types in optional.items():
                value = item.get(field)
                if value is not None and (not isinstance(value, types) or
                                          (types == _INT and isinstance(value, bool))):
                    raise precondition_failed(f"{where}: '{field}' has the wrong type")
            if key == "policies" and not item.get("definition"):
                raise precondition_failed(f"{where} needs a non-empty 'definition'")
            if key == "bindings" and item["destination_type"] not in ("queue", "exchange"):
                raise precondition_failed(f"{where}: destination_type must be 'queue' or 'exchange'")
    return document


def unimportable_queue_names(document: dict[str, Any], clustered: bool) -> list[dict[str, str]]:
    """Queues an import skips: streams (not implemented), and quorum queues on a standalone
    node (they need a cluster to replicate them)."""
    types = ("stream",) if clustered else ("quorum", "stream")
    return [
        {"vhost": q["vhost"], "name": q["name"]}
        for q in document.get("queues", [])
        if (q.get("arguments") or {}).get("x-queue-type") in types
    ]


INTERNAL_GLOBAL_PARAMETERS = frozenset({"internal_cluster_id"})  # RabbitMQ's own bookkeeping


def skipped_parameters(document: dict[str, Any]) -> list[dict[str, str]]:
    """Runtime parameters Warren does not apply (federation, shovels, vhost limits, operator
    policies, global ones such as cluster_name): listed by the import, never silently dropped."""
    skipped = [{"component": str(p.get("component")), "vhost": str(p.get("vhost")), "name": str(p.get("name"))}
               for p in document.get("parameters", []) if isinstance(p, dict)]
    skipped += [{"component": "global", "vhost": "", "name": str(p.get("name"))}
                for p in document.get("global_parameters", [])
                if isinstance(p, dict) and p.get("name") not in INTERNAL_GLOBAL_PARAMETERS]
    return skipped


def user_password_args(password_hash: str | None, hashing_algorithm: str | None) -> tuple[str, str]:
    """(hash, algorithm) for a user created from a hash; an empty hash means no password login."""
    return password_hash or "", hashing_algorithm or RABBIT_SHA256
