"""Builders for the structured validation errors of docs/architecture.md §4.1.

A node error is `{type, message, details, extra_info}`; the prompt-level error has the same shape. Keeping every
builder here means the exact type strings and messages that clients match on live in one place.
"""
from __future__ import annotations

from typing import Any


def error(kind: str, message: str, details: str = "", **extra_info: Any) -> dict:
    return {"type": kind, "message": message, "details": details, "extra_info": extra_info}


def invalid_prompt(message: str, details: str = "", **extra: Any) -> dict:
    return error("invalid_prompt", message, details, **extra)


def no_outputs() -> dict:
    return error("prompt_no_outputs", "Prompt has no outputs",
                 "The prompt contains no output nodes (such as SaveImage or PreviewImage) to execute.")


def outputs_failed(details: str) -> dict:
    return error("prompt_outputs_failed_validation", "Prompt outputs failed validation", details)


def input_error(kind: str, message: str, input_name: str, details: str = "", **extra: Any) -> dict:
    """A node error about one input; `extra_info.input_name` lets editors highlight the input."""
    return error(kind, message, details or input_name, input_name=input_name, **extra)
