"""seqlab.decode."""
