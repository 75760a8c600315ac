"""The node interface reference (a copy of ../shared/nodes-reference.json shipped with the tests, so CI has it)."""
import json
import os

REFERENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "nodes-reference.json")


def load_reference() -> dict:
    with open(REFERENCE) as f:
        return {k: v for k, v in json.load(f).items() if not k.startswith("_")}
