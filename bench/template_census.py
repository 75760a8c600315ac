"""Issue 16: how many of ComfyUI's official workflow templates use only nodes Tessera has, and which nodes the
others miss.

Walks every workflow of the installed `comfyui-workflow-templates-json` package (the template files themselves),
expands subgraphs (a node whose type is a subgraph id stands for the subgraph's own nodes), leaves out the
frontend's own nodes (notes, reroutes, primitives: they never reach a server), and splits off the templates that
need a partner-API (cloud) node or model (`openSource: false` in the package's index). For the rest it reports how many use only node types Tessera's catalogue has,
per model family of the issue (from the index's `models`), and the missing node types ranked by how many
templates each one blocks. Nothing is executed: this is the
node-coverage count that guides the work, not a run.

    python bench/template_census.py [--top 30] [--json]
"""
from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode", "Label (rgthree)"}


def _node_types(workflow: dict) -> set:
    """Every server-side node type a workflow uses, its subgraphs expanded."""
    subgraphs = {sg.get("id"): sg for sg in (workflow.get("definitions") or {}).get("subgraphs", [])}
    types, pending, seen = set(), [workflow], set()
    while pending:
        graph = pending.pop()
        for item in graph.get("nodes", []):
            kind = item.get("type")
            if kind in subgraphs:
                if kind not in seen:
                    seen.add(kind)
                    pending.append(subgraphs[kind])
            elif kind and kind not in FRONTEND_ONLY:
                types.add(kind)
    return types


FAMILIES = {"SD1.5": ("SD1.5", "SD 1.5", "Stable Diffusion 1.5"), "SDXL": ("SDXL",), "SD3.x": ("SD3",),
            "Flux.1": ("FLUX.1", "FLUX")}
NOT_FLUX1 = ("FLUX.2", "FLUX 2", "FLUX 3", "Kontext")


def _family(models: list) -> str:
    """The issue's family a template's `models` list (from the package's index) names, or "other"."""
    for family, marks in FAMILIES.items():
        for model in models:
            if any(model.startswith(mark) for mark in marks) and not (family == "Flux.1" and
                                                                      any(x in model for x in NOT_FLUX1)):
                return family
    return "other"


def _index(root: str) -> dict:
    """name -> (openSource, models) from the package's index.json (open source False: a partner model)."""
    try:
        with open(os.path.join(root, "index.json"), encoding="utf-8") as handle:
            categories = json.load(handle)
    except (OSError, ValueError):
        return {}
    return {t["name"]: (t.get("openSource"), t.get("models") or []) for c in categories for t in c["templates"]}


def census(known: set, cloud: set) -> dict:
    import comfyui_workflow_templates_json as package
    root = os.path.join(os.path.dirname(package.__file__), "templates")
    index = _index(root)
    runnable, local, cloud_names, blockers = [], 0, [], collections.Counter()
    families: dict = collections.defaultdict(lambda: {"local": 0, "known_nodes_only": []})
    for path in sorted(glob.glob(os.path.join(root, "*.json"))):
        try:
            with open(path, encoding="utf-8") as handle:
                workflow = json.load(handle)
        except (OSError, ValueError):
            continue
        if not isinstance(workflow, dict) or "nodes" not in workflow:
            continue  # the index files
        name = os.path.splitext(os.path.basename(path))[0]
        types = _node_types(workflow)
        open_source, models = index.get(name, (None, []))
        if types & cloud or name.startswith("api_") or open_source is False:
            cloud_names.append(name)
            continue
        local += 1
        family = families[_family(models)]
        family["local"] += 1
        missing = types - known
        if missing:
            blockers.update(missing)
        else:
            runnable.append(name)
            family["known_nodes_only"].append(name)
    return {"templates": local + len(cloud_names), "cloud": len(cloud_names), "local": local,
            "local_with_known_nodes_only": len(runnable), "runnable_by_nodes": runnable,
            "families": {k: dict(v) for k, v in sorted(families.items())},
            "missing_nodes_by_templates_blocked": blockers.most_common()}


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    import tempfile

    from compat.core_v3_nodes import add_core_v3_nodes
    from model_management.services import Services
    from nodes import builtin_catalogue
    catalogue = builtin_catalogue()
    add_core_v3_nodes(catalogue, Services.for_directory(tempfile.mkdtemp()))  # as the server does
    cloud = {spec.name for spec in catalogue if str(getattr(spec, "category", "")).startswith("api node")}
    result = census(set(catalogue.names()) - cloud, cloud)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"templates {result['templates']}: cloud (partner API) {result['cloud']}, local {result['local']}; "
          f"local ones using only nodes Tessera has: {result['local_with_known_nodes_only']}")
    print("  " + ", ".join(result["runnable_by_nodes"]))
    for family, row in result["families"].items():
        print(f"{family}: {row['local']} local templates, {len(row['known_nodes_only'])} with known nodes only"
              + (f" ({', '.join(row['known_nodes_only'])})" if family != "other" else ""))
    print(f"missing node types, by local templates each blocks (top {args.top}):")
    for kind, count in result["missing_nodes_by_templates_blocked"][:args.top]:
        print(f"  {count:4d}  {kind}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
