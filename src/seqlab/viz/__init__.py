"""seqlab.viz."""
