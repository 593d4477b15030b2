"""mkdocs hook: the configuration reference, rendered from the JSON Schema.

At build time the schema of every kind the ``torchmd-core`` distribution registers
(what ``tmd schema`` prints, minus third-party plugins installed beside it) is turned
into Markdown tables and appended to ``configuration.md``. Run this file to print the
Markdown: ``python docs/config_reference.py``.
"""

from __future__ import annotations

import inspect
import json
from typing import Any

PAGE = "configuration.md"
DISTRIBUTION = "torchmd-core"

# Config key → (registry role, heading); the order of the page.
SECTIONS = [
    ("potentials", "potentials", "Potentials (`potentials:`, a list)"),
    ("integrator", "integrators", "Integrators (`integrator:`)"),
    ("barostat", "barostats", "Barostats (`barostat:`)"),
    ("reporters", "reporters", "Reporters (`reporters:`, a list)"),
]


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """mkdocs entry point: append the generated reference to the configuration page."""
    if page.file.src_uri != PAGE:
        return markdown
    return markdown.rstrip() + "\n\n" + render()


def render() -> str:
    """The reference as Markdown.

    Top-level keys, nested sections, and one table per kind.
    """
    from torchmd_core.config import config_schema
    from torchmd_core.plugins import discover

    registry = discover(distributions=[DISTRIBUTION], disabled=())
    schema = config_schema(registry)
    defs = schema.get("$defs", {})
    out = ["## Top-level keys", "", _table(schema, defs, components=True)]
    nested = {
        "SystemConfig": "system",
        "MinimizeConfig": "minimize",
        "ExchangeConfig": "exchange",
        "DistributedConfig": "distributed",
    }
    for name, key in nested.items():
        out += [
            f"## `{key}:`",
            "",
            defs[name].get("description", ""),
            "",
            _table(defs[name], defs),
        ]
    for key, role, heading in SECTIONS:
        out += [f"## {heading}", ""]
        kinds = _kinds(schema["properties"][key], defs)
        if not kinds:
            out += ["No built-in kind.", ""]
        for kind, model in sorted(kinds.items()):
            description = (
                _summary(registry.get(role, kind)) if (role, kind) in registry else ""
            )
            out += [
                f"### `{kind}`",
                "",
                description,
                "",
                _table(model, defs, skip=("kind",)),
            ]
    out += _loaders(registry)
    return "\n".join(out).rstrip() + "\n"


def _summary(cls: type) -> str:
    """The first paragraph of a class docstring, on one line, in Markdown."""
    doc = inspect.getdoc(cls) or ""
    return " ".join(doc.split("\n\n")[0].split()).replace("``", "`")


def _kinds(node: Any, defs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """kind → model schema of every component model referenced under ``node``."""
    found: dict[str, dict[str, Any]] = {}
    for ref in _refs(node):
        model = defs.get(ref.rsplit("/", 1)[-1], {})
        kind = model.get("properties", {}).get("kind", {}).get("const")
        if kind is not None:
            found[kind] = model
    return found


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [
            r for k, v in node.items() if k != "discriminator" for r in _refs(v)
        ]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def _table(
    model: dict[str, Any],
    defs: dict[str, Any],
    skip: tuple[str, ...] = (),
    components: bool = False,
) -> str:
    """A Markdown table of a model's properties; with ``components``, the top-level
    component keys point to their sections below (the schema holds them as unions)."""
    from torchmd_core.config import SimulationConfig

    required = set(model.get("required", ()))
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    sections = {key: heading.split(" (")[0].lower() for key, _, heading in SECTIONS}
    for name, prop in model.get("properties", {}).items():
        if name in skip:
            continue
        default = (
            "*required*" if name in required else f"`{json.dumps(prop.get('default'))}`"
        )
        cells = [f"`{name}`", _type(prop, defs), default, _describe(prop)]
        if components and name in sections:
            many = prop.get("type") == "array" or "items" in prop
            cells[1] = f"{'list of ' if many else ''}{sections[name]} (below)"
            cells[3] = SimulationConfig.model_fields[name].description or ""
        rows.append(
            "| "
            + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells)
            + " |"
        )
    return "\n".join(rows) + "\n"


def _type(prop: dict[str, Any], defs: dict[str, Any]) -> str:
    if "$ref" in prop:
        name = prop["$ref"].rsplit("/", 1)[-1]
        return "mapping" if name in defs else name
    if "anyOf" in prop or "oneOf" in prop:
        return " or ".join(
            _type(p, defs) for p in prop.get("anyOf", prop.get("oneOf", []))
        )
    if "const" in prop:
        return f"`{json.dumps(prop['const'])}`"
    if "enum" in prop:
        return " or ".join(f"`{json.dumps(v)}`" for v in prop["enum"])
    kind = prop.get("type")
    if kind == "array":
        if "prefixItems" in prop:
            return "[" + ", ".join(_type(p, defs) for p in prop["prefixItems"]) + "]"
        return f"list of {_type(prop.get('items', {}), defs)}"
    if kind == "string" and prop.get("format") == "path":
        return "path"
    return {
        "number": "number",
        "integer": "integer",
        "string": "string",
        "boolean": "boolean",
        "null": "null",
        "object": "mapping",
    }.get(str(kind), "any")


def _describe(prop: dict[str, Any]) -> str:
    bounds = {
        "exclusiveMinimum": ">",
        "minimum": "≥",
        "exclusiveMaximum": "<",
        "maximum": "≤",
    }
    limits = [f"{op} {prop[key]:g}" for key, op in bounds.items() if key in prop]
    for option in prop.get("anyOf", []):
        limits += [
            f"{op} {option[key]:g}" for key, op in bounds.items() if key in option
        ]
    text = prop.get("description", "")
    return f"{text} ({', '.join(limits)})" if limits else text


def _loaders(registry: Any) -> list[str]:
    from torchmd_core.loader import CoordinateLoader, TopologyLoader

    rows = [
        "## File formats (`system.topology_format`, `system.coordinates_format`)",
        "",
        "A loader is picked by file extension (the longest match), or by its kind in "
        "`system.topology_format` / `system.coordinates_format`.",
        "",
        "| kind | reads | extensions | description |",
        "|---|---|---|---|",
    ]
    for entry in registry:
        if entry.role != "loaders":
            continue
        reads = [
            w
            for w, base in (
                ("topology", TopologyLoader),
                ("coordinates", CoordinateLoader),
            )
            if issubclass(entry.cls, base)
        ]
        exts = ", ".join(f"`.{e.lstrip('.')}`" for e in entry.cls.extensions)
        rows.append(
            f"| `{entry.kind}` | {', '.join(reads)} | {exts} "
            f"| {_summary(entry.cls).replace('|', '/')} |"
        )
    return [*rows, ""]


if __name__ == "__main__":
    print(render())
