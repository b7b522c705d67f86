"""What the three code formats (``torch-code``, ``keras-code``, ``flax-code``) write beside their weights.

Each format's module generates the model and writes its weights in its own
framework's file; ``model.py``, the README and the convert summary's warning
about stubbed layers are the same for all three, here.
"""

from __future__ import annotations

from pathlib import Path

from caffeport.ir import Net


def write_code_folder(net: Net, path: Path, format_name: str, source: str, readme: str, stubs: list[str]) -> None:
    """``model.py`` and ``README.md`` into the (temporary) folder ``path``; the stubs listed in ``net.warnings``."""
    (path / "model.py").write_text(source, encoding="utf-8")
    (path / "README.md").write_text(readme, encoding="utf-8")
    if stubs:
        net.warnings.append(f"{format_name}: {len(stubs)} layer(s) written as stubs that raise "
                            "NotImplementedError when called: " + "; ".join(stubs))
