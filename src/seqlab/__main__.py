"""`python -m seqlab` runs the command line (also under `torchrun -m seqlab`)."""

from seqlab.cli import main

raise SystemExit(main())
