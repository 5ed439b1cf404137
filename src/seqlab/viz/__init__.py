"""Plots: training curves, attention maps, and the diagnostics of recurrent runs."""

from seqlab.viz.attention import plot_attention
from seqlab.viz.curves import plot_metrics
from seqlab.viz.diagnostics import (
    plot_gate_activity,
    plot_grad_norm_history,
    plot_gradient_flow,
    write_run_diagnostics,
)

__all__ = [
    "plot_attention",
    "plot_gate_activity",
    "plot_grad_norm_history",
    "plot_gradient_flow",
    "plot_metrics",
    "write_run_diagnostics",
]
