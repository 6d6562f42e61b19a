"""jax.export support: the safety checks to disable for jax_roi's custom calls."""

from __future__ import annotations

import jax

from . import _native


def export_disabled_checks() -> list[jax.export.DisabledSafetyCheck]:
    """The ``DisabledSafetyCheck`` list for every jax_roi FFI target.

    Pass it as ``jax.export.export(jax.jit(f), disabled_checks=export_disabled_checks())``.
    The process that deserializes and calls the module must ``import jax_roi`` first, which
    registers the targets.
    """
    return [jax.export.DisabledSafetyCheck.custom_call(t) for t in _native.TARGETS]
