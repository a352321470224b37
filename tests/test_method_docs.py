"""The README's method tables and `recon methods` are generated from the method declarations."""

from pathlib import Path

from pipelines.method_docs import README_BEGIN, README_END, method_table
from pipelines.reconstructors import available

ROOT = Path(__file__).resolve().parents[1]


def test_readme_method_tables_are_the_generated_ones():
    readme = (ROOT / "README.md").read_text()
    start, end = readme.index(README_BEGIN), readme.index(README_END) + len(README_END)
    assert readme[start:end] == method_table(), "README is stale: paste the output of `recon methods --markdown`"
    assert "[docs/architecture.md](docs/architecture.md)" in readme
    assert (ROOT / "docs" / "architecture.md").exists()


def test_recon_methods_lists_every_parameter(run_recon):
    out = run_recon("methods", "-v").stdout
    for method in available():
        assert f"{method.modality:<4} {method.name:<16} {method.summary}" in out
        for p in method.parameters:
            assert f"{p.name}=" in out and p.allowed() in out
    assert run_recon("methods", "--markdown").stdout.strip() == method_table()
