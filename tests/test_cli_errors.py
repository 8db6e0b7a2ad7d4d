"""Bad input: one clear line on stderr, exit status 2, and nothing written to the store."""
import pytest

from conftest import cli


def _files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


@pytest.mark.parametrize("override, message", [
    ("arch=resnet19", "unknown architecture 'resnet19'"),
    ("init=kaiming_normal", "unknown initializer 'kaiming_normal'"),
    ("optimizer=adamm", "unknown optimizer 'adamm'"),
    ("learning_rate=0.1", "unknown config key 'learning_rate'"),
    ("arch_options={patch = 4}", "architecture 'mlp' has no option 'patch'"),
    ("dataset=cifar10", "cifar10"),
])
def test_bad_names_change_nothing(tmp_path, override, message):
    store = tmp_path / "store"
    res = cli("train", override, "--store", store, "--data-root", tmp_path / "data",
              "--no-progress")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], res.stderr
    assert _files(store) == []


def test_missing_dataset_names_the_folder(tmp_path):
    res = cli("train", "dataset=cifar10", "--store", tmp_path / "s", "--data-root",
              tmp_path / "data", "--no-progress")
    assert res.returncode == 2 and str(tmp_path / "data") in res.stderr


def test_malformed_grid(tmp_path):
    grid = tmp_path / "g.toml"
    grid.write_text("[defaults\nepochs = 3\n")
    res = cli("train-all", grid, "--store", tmp_path / "s")
    assert res.returncode == 2 and "not valid TOML" in res.stderr
    grid.write_text('[[study]]\nname = "x"\narch = ["mlp", "transformer"]\n')
    res = cli("train-all", grid, "--store", tmp_path / "s")
    assert res.returncode == 2 and "unknown architecture 'transformer'" in res.stderr
    assert _files(tmp_path / "s") == []


def test_unwritable_store(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    res = cli("train", "epochs=1", "--store", blocker / "store", "--no-progress")
    assert res.returncode == 2 and "cannot write the store" in res.stderr
    assert blocker.read_text() == "not a folder"


def test_list_and_help():
    res = cli("list")
    assert res.returncode == 0
    for name in ("resnet18", "vit", "l-momentum", "emergence", "sam-<base>", "lion", "digits",
                 "hessian", "surface"):
        assert name in res.stdout, name
    for command in ("train", "train-all", "list", "runs", "export", "analyze"):
        assert cli(command, "--help").returncode == 0
