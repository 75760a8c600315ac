"""`comfy_execution`: graph expansion and execution helpers packs import (re-exports of the engine's own)."""
