"""The README's promises that code can check: its first two commands, and a spec table that
names every field of every section and every model kind."""

from __future__ import annotations

import re
import typing
from pathlib import Path

from pydantic import BaseModel

from drl_engine.spec import ExperimentSpec, ModelKind

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def spec_table_rows() -> dict[str, str]:
    """{section: its row} of the section table under '## Specs' (up to the blank line after it)."""
    start = README.index("| section | fields (default) |")
    specs = README[start:README.index("\n\n", start)]
    return {m.group(1): m.group(2) for m in re.finditer(r"^\| `(\w+)`[^|]*\| (.*) \|$", specs, re.M)}


def test_readme_starts_with_the_main_job_and_the_test_command():
    blocks = re.findall(r"```bash\n(.*?)\n```", README, re.S)
    main_job, tests = blocks[0], blocks[1]
    assert main_job.startswith("python3 -m venv .venv") and "pip install -e ." in main_job
    assert "drl run examples/digits_quick.yaml" in main_job
    assert tests == "bash scripts/test.sh"
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert ci.rstrip().endswith("exec bash scripts/test.sh")


def test_spec_table_names_every_field_and_model_kind():
    rows = spec_table_rows()
    for section, field in ExperimentSpec.model_fields.items():
        annotation = field.annotation
        assert section in rows, f"README's spec table has no row for {section}"
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            for name in annotation.model_fields:
                assert f"`{name}`" in rows[section], f"README's spec table: {section}.{name} missing"
    for kind in typing.get_args(ModelKind):
        assert f"`{kind}`" in rows["model"], f"README's spec table: model.kind {kind} missing"
