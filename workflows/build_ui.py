"""Regenerate the UI-format twin (NAME.json) of every NAME.api.json in this folder."""
import glob
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from graph.ui_layout import api_to_ui  # noqa: E402
from nodes import builtin_catalogue  # noqa: E402


def main() -> int:
    catalogue = builtin_catalogue()
    for api_path in sorted(glob.glob(os.path.join(HERE, "*.api.json"))):
        with open(api_path) as f:
            prompt = json.load(f)
        ui = api_to_ui(prompt, catalogue)
        ui_path = api_path.replace(".api.json", ".json")
        with open(ui_path, "w") as f:
            json.dump(ui, f, indent=1)
            f.write("\n")
        print(ui_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
