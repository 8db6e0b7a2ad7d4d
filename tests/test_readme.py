"""The README documents every registry entry, every CLI command and the two-command start."""
import re

from conftest import REPO
from landscape_lib.registries import REGISTRIES

README = (REPO / "README.md").read_text()


def test_every_registry_entry_is_documented():
    missing = [f"{kind}:{entry.name}" for kind, (registry, _) in REGISTRIES.items()
               for entry in registry if f"`{entry.name}`" not in README]
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
        assert (REPO / name).stat().st_size > 10_000, name
