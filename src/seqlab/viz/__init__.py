"""Plots: training curves (more views, such as attention maps, live beside them)."""

from seqlab.viz.attention import plot_attention
from seqlab.viz.curves import plot_metrics

__all__ = ["plot_attention", "plot_metrics"]
