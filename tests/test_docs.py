"""The examples in docs/kernel-language.md run as written, in order."""
import re
import runpy
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "kernel-language.md"


def test_kernel_language_guide_examples_run(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 8
    script = tmp_path / "kernel_language_examples.py"     # a real file: kernels need their source
    script.write_text("\n\n".join(blocks))
    runpy.run_path(str(script), run_name="docs_examples")
