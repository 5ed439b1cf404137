"""seqlab.data stands alone: importing it loads no model, layer or training code."""

import subprocess
import sys


def test_data_imports_no_other_seqlab_subpackage():
    code = (
        "import sys, seqlab.data; print(sorted(m for m in sys.modules if m.startswith('seqlab')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert not any(name in loaded for name in ("seqlab.nn", "seqlab.models", "seqlab.train"))
    assert "seqlab.data.tokenizers" in loaded
