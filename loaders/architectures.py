"""Rebuild the nn.Module a state dict belongs to, from a ``"package.module:factory"`` spec.

A state dict holds weights but no graph, so the CLI's ``--arch`` names a function that builds the empty module
(``neuronmap.examples.nets:mlp_4x256``); the weights are then loaded with ``strict=True``, so a checkpoint that does
not fit fails with the keys and shapes that differ instead of loading half a model.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Mapping

import torch
from torch import nn

from neuronmap.loaders.errors import ArchitectureError

_SHOW = 5  # keys listed per kind of mismatch; the rest are counted


def resolve_factory(spec: str) -> Callable[[], nn.Module]:
    """The callable named by ``"package.module:factory"``.

    A spec under ``examples.`` also resolves as ``neuronmap.examples.``, the name the package is installed under.

    Raises
    ------
    ArchitectureError
        If the spec is malformed, the module cannot be imported, or the attribute is missing or not callable.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ArchitectureError(
            f"Architecture spec {spec!r} is not of the form 'package.module:factory', e.g. "
            "'neuronmap.examples.nets:mlp_4x256'.",
            spec=spec,
        )
    module = _import(module_name, spec)
    target: object = module
    for part in attr.split("."):  # "module:Class.builder" works too
        if not hasattr(target, part):
            public = [name for name in dir(module) if not name.startswith("_")]
            near = difflib.get_close_matches(attr, public, n=3)
            hint = f" Did you mean {', '.join(near)}?" if near else ""
            raise ArchitectureError(
                f"Module {module_name!r} has no attribute {attr!r} (from --arch {spec!r}).{hint}", spec=spec
            )
        target = getattr(target, part)
    if not callable(target):
        raise ArchitectureError(
            f"{spec!r} names a {type(target).__name__}, not a function or class that builds an nn.Module.", spec=spec
        )
    return target


def build_module(spec: str) -> nn.Module:
    """Call the factory named by ``spec`` with no arguments and check that it returns an nn.Module."""
    factory = resolve_factory(spec)
    try:
        module = factory()
    except TypeError as error:
        raise ArchitectureError(
            f"Calling {spec!r} with no arguments failed ({error}). --arch must name a factory "
            "that takes no arguments; wrap one with fixed arguments in a function.",
            spec=spec,
        ) from error
    except Exception as error:  # the user's factory raised: their bug, told in one line with its type and text
        first = (str(error).strip().splitlines() or [""])[0]
        raise ArchitectureError(
            f"Calling {spec!r} raised {type(error).__name__}: {first}. Fix the factory, or name another with --arch.",
            spec=spec,
        ) from error
    if not isinstance(module, nn.Module):
        raise ArchitectureError(f"{spec!r} returned a {type(module).__name__}, not an nn.Module.", spec=spec)
    return module


def load_state_dict_into(module: nn.Module, state_dict: Mapping[str, torch.Tensor], *, spec: str = "") -> nn.Module:
    """Load ``state_dict`` into ``module`` with ``strict=True``; returns ``module``.

    Raises
    ------
    ArchitectureError
        Listing missing keys, unexpected keys and shape mismatches when the checkpoint does not fit.
    """
    expected = module.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    mismatched = [
        f"{key} {tuple(state_dict[key].shape)} vs {tuple(expected[key].shape)}"
        for key in expected
        if key in state_dict and state_dict[key].shape != expected[key].shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys: {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_listing(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatches (checkpoint vs module): {_listing(mismatched)}")
        hint = ""
        if unexpected and all(key.startswith("module.") for key in state_dict):
            hint = " The checkpoint's keys start with 'module.' (saved from DataParallel); strip that prefix."
        name = spec or type(module).__name__
        raise ArchitectureError(
            f"The checkpoint does not fit {name}: {'; '.join(parts)}. Check that --arch names the "
            f"architecture the checkpoint was saved from.{hint}",
            spec=spec,
        )
    module.load_state_dict(state_dict, strict=True)
    return module


def _import(module_name: str, spec: str) -> object:
    candidates = [module_name]
    if module_name.startswith("examples."):
        candidates.append(f"neuronmap.{module_name}")
    for i, candidate in enumerate(candidates):
        try:
            return importlib.import_module(candidate)
        except ModuleNotFoundError as error:
            # Only "this module does not exist" moves on; a missing dependency inside it is the user's to see.
            if error.name is None or not candidate.startswith(error.name):
                raise ArchitectureError(
                    f"Importing {candidate!r} (from --arch {spec!r}) failed: {error}.", spec=spec
                ) from error
            if i == len(candidates) - 1:
                raise ArchitectureError(
                    f"There is no importable module {module_name!r} (from --arch {spec!r}). "
                    "Check the spelling, and that its package is installed or on PYTHONPATH.",
                    spec=spec,
                ) from error
        except Exception as error:  # the user's module raised while importing
            raise ArchitectureError(
                f"Importing {candidate!r} (from --arch {spec!r}) raised {type(error).__name__}: {error}.", spec=spec
            ) from error
    raise AssertionError("unreachable")


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOW])
    return f"{shown} (and {len(items) - _SHOW} more)" if len(items) > _SHOW else shown
