"""Shared set-up for the compat tests: a fresh engine per test with the fixture packs loaded.

The compat layer's binding is process-global (compat/_runtime.py), so every fixture re-binds it to its own
Services and catalogue."""
import os
import uuid

import pytest

import compat
from execution.caches import ClassicCache
from execution.events import RecordingSink
from execution.scheduler import Executor, Job
from model_management.services import Services
from graph.validation import validate_prompt
from nodes import builtin_catalogue
from compat.packs import load_packs

PACKS_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "packs")


class PackEngine:
    """Built-in catalogue + the fixture packs, an executor and a validate-then-run helper."""

    def __init__(self, base_dir):
        self.services = Services.for_directory(str(base_dir))
        self.catalogue = builtin_catalogue()
        self.results = {r.name: r for r in load_packs([PACKS_DIR], self.catalogue, self.services)}
        self.executor = Executor(self.catalogue, ClassicCache(), self.services)

    def validate(self, prompt):
        return validate_prompt(prompt, self.catalogue, None, self.services)

    def run(self, prompt, control=None):
        result = self.validate(prompt)
        assert result.ok, (result.error, result.node_errors)
        job = Job(str(uuid.uuid4()), result.prompt, result.outputs, {}, result.order)
        if control is not None:
            job.control = control
        sink = RecordingSink()
        outcome = self.executor.execute_sync(job, sink)
        return outcome, sink


@pytest.fixture
def pack_engine(tmp_path):
    return PackEngine(tmp_path)


@pytest.fixture
def bound(tmp_path):
    """Just the compat binding (built-in catalogue), for tests of the modules themselves."""
    services = Services.for_directory(str(tmp_path))
    catalogue = builtin_catalogue()
    compat.install(services, catalogue)
    return services, catalogue
