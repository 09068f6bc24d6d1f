"""The import contracts of pyproject.toml (`[tool.importlinter]`), run by import-linter.

They keep the Lambda package free of Django and of the rest of syncer, the stream handler
out of Django code (but for the local relay), syncer.local out of production code, and the
store writers and base modules below the parts that use them. On failure the output lists
each broken contract with the import chain that breaks it.
"""

from pathlib import Path

from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_are_kept(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)  # the root packages are found from the project's folder
    status = lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True)
    report = capsys.readouterr().out
    assert status == 0, report
    assert "0 broken" in report
