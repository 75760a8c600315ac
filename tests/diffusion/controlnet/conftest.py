"""Tiny models and ControlNet files shared by the ControlNet tests."""
import pytest

from model_management.checkpoints import load_checkpoint


@pytest.fixture(scope="session")
def tiny_sd1_model(tiny_models):
    return load_checkpoint(tiny_models.checkpoint("sd1")).model


@pytest.fixture(scope="session")
def tiny_sdxl_model(tiny_models):
    return load_checkpoint(tiny_models.checkpoint("sdxl")).model
