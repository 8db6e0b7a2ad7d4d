"""The README documents every registry entry with every option and its default, every run
field with its default, every CLI command and the two-command start."""
import dataclasses
import re

from landscape_lib.config import RunConfig, parse_value
from landscape_lib.locations import REPO_ROOT
from landscape_lib.optim import SAM_PREFIX, SAM_RHO
from landscape_lib.registry import registries

README = (REPO_ROOT / "README.md").read_text()


def table_rows(heading: str) -> list[list[str]]:
    """The cells of each body row of the first table after `heading`."""
    section = README.split(heading, 1)[1]
    lines = re.search(r"\n(\|.*\|\n)+", section).group(0).strip().splitlines()
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def test_every_registry_entry_is_documented():
    missing = [f"{kind}:{entry.name}" for kind, registry in registries().items()
               for entry in registry if f"`{entry.name}`" not in README]
    assert not missing, missing


def test_every_registry_option_is_documented_with_its_default():
    wrong = []
    for kind, registry in registries().items():
        rows = {row[0]: row[-1] for row in table_rows(f"### {kind.capitalize()}")}
        for entry in registry:
            cell = rows.get(f"`{entry.name}`")
            options = registry.options(entry.name)
            expected = [f"`{k}={v!r}`" for k, v in options.items()] or ["—"]
            if cell is None or any(text not in cell for text in expected):
                wrong.append((kind, entry.name, expected, cell))
    sam = {row[0]: row[-1] for row in table_rows("### Optimizers")}[f"`{SAM_PREFIX}<base>`"]
    assert f"`rho={SAM_RHO!r}`" in sam
    assert not wrong, wrong


def test_every_run_field_is_documented_with_its_default():
    documented = {}
    for row in table_rows("Run fields"):
        names = re.findall(r"`(\w+)`", row[0])
        defaults = re.findall(r"`([^`]*)`", row[1])
        for i, name in enumerate(names):
            documented[name] = parse_value(defaults[i]) if len(defaults) == len(names) else None
    for field in dataclasses.fields(RunConfig):
        if field.name.startswith("_"):
            continue
        default = field.default if field.default_factory is dataclasses.MISSING \
            else field.default_factory()
        assert field.name in documented, field.name
        if default is not None:  # None defaults are described in words ("data set default")
            assert documented[field.name] == default, (field.name, documented[field.name])


def test_every_field_limit_is_documented():
    from landscape_lib.config import FIELD_LIMITS
    text = " ".join(README.split())  # the paragraph wraps lines
    missing = [f"`{name}`: {limit}" for name, limit in FIELD_LIMITS.items()
               if f"`{name}`: {limit}" not in text]
    assert not missing, missing


def test_cli_commands_and_quick_start_are_documented():
    from landscape_lib.cli import build_parser
    commands = build_parser()._subparsers._group_actions[0].choices
    assert all(f"`{name}" in README for name in commands), commands
    first_block = re.search(r"```bash\n(.*?)```", README, re.S).group(1)
    assert [line.split("#")[0].strip() for line in first_block.strip().splitlines()] == \
        ["make demo", "make test"]


def test_screenshots_exist():
    for name in re.findall(r"\]\((dashboard/screenshots/[^)]+)\)", README):
        assert (REPO_ROOT / name).stat().st_size > 10_000, name
