"""The bad CLI and grid inputs of issue 12 item 9, as data (read by test_bad_inputs.py).

Each case: an argv (placeholders {store} {grid} {tmp} {run}), an optional grid/config file body
written to {grid}, the store it runs against ("absent": none must be created; "seeded": a copy of
a store holding one trained run, which must stay byte-identical), and what must happen:
"error" (one `error:` line, exit 2, store unchanged) or "valid" (accepted: `why` says why and
where it is documented; exit 0, no traceback).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from gridtext import table, tiny_mlp


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple
    body: str | bytes | None = None     # the grid / config file's content, at {grid}
    store: str = "absent"               # absent | seeded
    expect: str = "error"               # error | valid
    match: str = ""                     # a word the error line must contain (case-insensitive)
    why: str = ""                       # for valid cases: why it is valid and documented
    isolate: bool = False               # run as a subprocess with memory and time limits
    extra: dict = field(default_factory=dict)


# A valid, tiny grid every grid case starts from (two runs of one epoch on synthetic data).
DEFAULTS = table("[defaults]", tiny_mlp(hidden=8, dataset_options={"n_train": 64, "n_test": 32},
                                        epochs=1, batch_size=32))
STUDY = '[[study]]\nname = "s"\nseed = [0, 1]\n'
GRID = DEFAULTS + STUDY
# The same tiny run for `train`: the case's overrides come after these and win.
TINY = ("dataset=synthetic", "dataset_options={n_train = 64, n_test = 32}",
        "arch_options={hidden = [8]}", "epochs=1", "batch_size=32")
COMMON = ("--store", "{store}", "--data-root", "{tmp}/data", "--no-progress")


def train(id, *overrides, match="", **kw):
    return Case(f"train-{id}", ("train", *TINY, *overrides, *COMMON), match=match, **kw)


def grid(id, body, *flags, match="", **kw):
    return Case(f"grid-{id}", ("train-all", "{grid}", *flags, *COMMON), body=body, match=match,
                **kw)


def analyses(id, table, match="", **kw):
    """A grid with an [analyses] section: must fail before any training."""
    return grid(f"analyses-{id}", DEFAULTS + table + "\n" + STUDY, match=match, **kw)


def analyze(id, *args, match="", **kw):
    return Case(f"analyze-{id}", ("analyze", *args, "--store", "{store}", "--no-progress"),
                store="seeded", match=match, **kw)


DEEP = "[" * 5000 + "]" * 5000
DEEP_TABLE = "{ a = " * 5000 + "1" + " }" * 5000
HUGE = ("[[study]]\nname = \"huge\"\n" + "".join(
    f"{key} = [{', '.join(str(i) for i in range(1000))}]\n"
    for key in ("seed", "train_subset", "warmup_epochs")))  # 10^9 runs

CASES = [
    # ---------------------------------------------------------------- numbers: train overrides
    train("lr-nan", "lr=nan", match="lr"),
    train("lr-inf", "lr=inf", match="lr"),
    train("lr-neg-inf", "lr=-inf", match="lr"),
    train("lr-1e400", "lr=1e400", match="lr"),
    train("lr-zero", "lr=0", match="lr"),
    train("lr-negative", "lr=-1", match="lr"),
    train("lr-string", 'lr="fast"', match="lr"),
    train("lr-bool", "lr=true", match="lr"),
    train("weight-decay-negative", "weight_decay=-1", match="weight_decay"),
    train("weight-decay-nan", "weight_decay=nan", match="weight_decay"),
    train("weight-decay-inf", "weight_decay=inf", match="weight_decay"),
    train("momentum-5", "momentum=5", match="momentum"),
    train("momentum-negative", "momentum=-0.5", match="momentum"),
    train("momentum-nan", "momentum=nan", match="momentum"),
    train("momentum-one-adam", "optimizer=adam", "momentum=1", match="momentum"),
    train("seed-20-digits", "seed=12345678901234567890", match="seed"),
    train("seed-negative", "seed=-1", match="seed"),
    train("seed-over-int32", "seed=2147483648", match="seed"),
    train("seed-float", "seed=1.5", match="seed"),
    train("grad-clip-negative", "grad_clip=-1", match="grad_clip"),
    train("grad-clip-nan", "grad_clip=nan", match="grad_clip"),
    train("grad-clip-inf", "grad_clip=inf", match="grad_clip"),
    train("label-smoothing-2", "label_smoothing=2", match="label_smoothing"),
    train("label-smoothing-negative", "label_smoothing=-0.1", match="label_smoothing"),
    train("label-smoothing-nan", "label_smoothing=nan", match="label_smoothing"),
    train("batch-size-0", "batch_size=0", match="batch_size"),
    train("batch-size-negative", "batch_size=-1", match="batch_size"),
    train("batch-size-float", "batch_size=1e3", match="batch_size"),
    train("epochs-0", "epochs=0", match="epochs"),
    train("epochs-negative", "epochs=-1", match="epochs"),
    train("epochs-over-int32", "epochs=10000000000", match="epochs"),
    train("warmup-negative", "warmup_epochs=-1", match="warmup_epochs"),
    train("train-subset-negative", "train_subset=-1", match="train_subset"),
    train("sketch-dim-0", "sketch_dim=0", match="sketch_dim"),
    train("sketch-dim-negative", "sketch_dim=-5", match="sketch_dim"),
    train("schedule-unknown", "schedule=linear", match="schedule"),
    train("trajectory-unknown", "trajectory=none", match="trajectory"),
    train("compile-mode-unknown", "compile_mode=fast", match="compile_mode"),
    train("compile-not-bool", "compile=yes", match="compile"),
    # ---------------------------------------------------------------- types and options
    train("checkpoint-epochs-strings", 'checkpoint_epochs=["a"]', match="checkpoint_epochs"),
    train("checkpoint-epochs-float", "checkpoint_epochs=[1.5]", match="checkpoint_epochs"),
    train("checkpoint-epochs-negative", "checkpoint_epochs=[-1]", match="checkpoint_epochs"),
    train("checkpoint-epochs-past-end", "checkpoint_epochs=[99]", match="checkpoint_epochs"),
    train("checkpoint-epochs-nested", "checkpoint_epochs=[[1]]", match="checkpoint_epochs"),
    train("checkpoint-epochs-scalar", "checkpoint_epochs=5", match="checkpoint_epochs"),
    train("arch-options-int", "arch_options=5", match="arch_options"),
    train("arch-options-hidden-string", 'arch_options={hidden = "abc"}', match="hidden"),
    train("arch-options-hidden-negative", "arch_options={hidden = [-1]}", match="hidden"),
    train("arch-options-hidden-zero", "arch_options={hidden = [0]}", match="hidden"),
    train("arch-options-hidden-scalar", "arch_options.hidden=5", match="hidden"),
    train("arch-options-unknown", "arch_options={patch = 4}", match="patch"),
    train("vit-patch-not-dividing", "arch=vit", "arch_options={patch_size = 3}",
          match="patch_size"),
    train("vit-heads-not-dividing", "arch=vit", "arch_options={dim = 30, heads = 4}",
          match="heads"),
    train("cnn-widths-string", "arch=cnn", 'arch_options={widths = "wide"}', match="widths"),
    train("dataset-options-unknown", "dataset_options={bogus = 1}", match="bogus"),
    train("dataset-options-negative", "dataset_options={n_train = -5}", match="n_train"),
    train("dataset-options-int", "dataset_options=5", match="dataset_options"),
    train("init-options-unknown", "init_options={bogus = 1}", match="bogus"),
    train("optimizer-options-unknown", "optimizer_options={bogus = 1}", match="bogus"),
    train("optimizer-options-betas-string", "optimizer=adam", 'optimizer_options={betas = "x"}',
          match="betas"),
    train("sam-rho-negative", "optimizer=sam-adam", "optimizer_options={rho = -1}", match="rho"),
    train("tags-int", "tags=5", match="tags"),
    train("study-int", "study=5", match="study"),
    train("unknown-key", "learning_rate=0.1", match="learning_rate"),
    train("override-no-equals", "lr", match="key=value"),
    train("override-empty-key", "=5", match="key"),
    train("override-double-dot", "arch_options..hidden=[4]", match="arch_options"),
    train("override-into-scalar", "lr.x=1", match="lr"),
    train("override-empty-value", "lr=", match="lr"),
    # ---------------------------------------------------------------- scheduled analyses (train)
    train("analyses-unknown-kind", "analyses={bogus = {}}", match="bogus"),
    train("analyses-unknown-param", "analyses={hessian = {bogus = 1}}", match="bogus"),
    train("analyses-epoch-past-end", "analyses={hessian = {epochs = [99]}}", match="99"),
    train("analyses-epochs-string", 'analyses={hessian = {epochs = "last"}}', match="epochs"),
    train("analyses-not-table", "analyses={hessian = 5}", match="hessian"),
    train("analyses-seeds-string", 'analyses={surface = {seeds = "x"}}', match="seeds"),
    # hessian takes samples = 0 (the whole split); surface does not
    train("analyses-samples-0", "analyses={surface = {samples = 0}}", match="samples"),
    train("analyses-samples-inf", "analyses={hessian = {samples = 1e400}}", match="samples"),
    train("analyses-grid-1", "analyses={surface = {grid = 1}}", match="grid"),
    # ---------------------------------------------------------------- devices, files, store
    train("device-tpu", "--device", "tpu", match="tpu"),
    train("device-cuda-without-gpu", "--device", "cuda", match="cuda"),
    train("device-cuda-7", "--device", "cuda:7", match="cuda"),
    train("device-empty", "--device", "", match="device"),
    train("device-shell", "--device", "cpu; touch {tmp}/pwned", match="device"),
    Case("train-config-missing", ("train", "--config", "{tmp}/none.toml", *COMMON),
         match="none.toml"),
    Case("train-config-directory", ("train", "--config", "{tmp}", *COMMON), match="config"),
    Case("train-config-not-utf8", ("train", "--config", "{grid}", *COMMON),
         body=b"lr = 0.1\n# caf\xe9 \xff\xfe\n", match="UTF-8"),
    Case("train-config-deep", ("train", "--config", "{grid}", *COMMON),
         body=f"tags = {DEEP}\n", match="nest"),
    Case("train-config-unknown-key", ("train", "--config", "{grid}", *COMMON),
         body="learning_rate = 0.1\n", match="learning_rate"),
    Case("train-store-empty", ("train", *TINY, "--store", "", "--no-progress"), match="store"),
    Case("train-store-under-file", ("train", *TINY, "--store", "{tmp}/file/store",
                                    "--no-progress"), match="store", extra={"file": "file"}),
    # ---------------------------------------------------------------- train-all flags
    grid("jobs-abc", GRID, "-j", "abc", match="jobs"),
    grid("jobs-0", GRID, "-j", "0", match="jobs"),
    grid("jobs-negative", GRID, "-j", "-4", match="jobs"),
    grid("jobs-float", GRID, "-j", "1.5", match="jobs"),
    grid("jobs-empty", GRID, "-j", "", match="jobs"),
    grid("jobs-more-than-runs", GRID, "-j", "5", expect="valid",
         why="-j above the pending runs is capped at them (documented in `train-all --help`)"),
    grid("epochs-flag-0", GRID, "--epochs", "0", match="epochs"),
    grid("epochs-flag-negative", GRID, "--epochs", "-1", match="epochs"),
    grid("epochs-flag-abc", GRID, "--epochs", "abc", match="epochs"),
    grid("set-lr-nan", GRID, "--set", "lr=nan", match="lr"),
    grid("set-samples-1e400", GRID, "--set", "samples=1e400", match="samples"),
    grid("set-epochs-0", GRID, "--set", "epochs=0", match="epochs"),
    grid("set-no-equals", GRID, "--set", "lr", match="key=value"),
    grid("study-unknown", GRID, "--study", "nope", match="nope"),
    # ---------------------------------------------------------------- grid files
    Case("grid-missing", ("train-all", "{tmp}/none.toml", *COMMON), match="none.toml"),
    Case("grid-directory", ("train-all", "{tmp}", *COMMON), match="grid"),
    grid("not-utf8", GRID.encode() + b"# caf\xe9 \xff\n", match="UTF-8"),
    grid("invalid-toml", "[defaults\nepochs = 3\n", match="TOML"),
    grid("empty", "", match="no runs"),
    grid("deep-array", GRID + f"[[study]]\nname = \"deep\"\ntags = {DEEP}\n", match="nest"),
    grid("deep-table", GRID + f"[[study]]\nname = \"deep\"\ntags = [{DEEP_TABLE}]\n",
         match="nest"),
    grid("huge", DEFAULTS + HUGE, match="runs", isolate=True),
    grid("defaults-int", "defaults = 5\n" + STUDY, match="defaults"),
    grid("defaults-list", "defaults = [1]\n" + STUDY, match="defaults"),
    grid("study-int", DEFAULTS.replace("[defaults]", "study = 5\n[defaults]"), match="study"),
    grid("study-string", DEFAULTS.replace("[defaults]", 'study = "x"\n[defaults]'),
         match="study"),
    grid("study-list-of-ints", DEFAULTS.replace("[defaults]", "study = [1, 2]\n[defaults]"),
         match="study"),
    grid("study-table", DEFAULTS + '[study]\nname = "s"\nseed = [0, 1]\n', match="study"),
    grid("study-name-int", DEFAULTS + "[[study]]\nname = 5\nseed = [0, 1]\n", match="name"),
    grid("study-unknown-key", DEFAULTS + '[[study]]\nname = "s"\nsed = [0, 1]\n', match="sed"),
    grid("study-empty-sweep", DEFAULTS + '[[study]]\nname = "s"\nseed = []\n', match="seed"),
    grid("variants-int", DEFAULTS + '[[study]]\nname = "s"\nvariants = 5\n', match="variants"),
    grid("variants-empty", DEFAULTS + '[[study]]\nname = "s"\nvariants = []\n',
         match="variants"),
    grid("variants-of-ints", DEFAULTS + '[[study]]\nname = "s"\nvariants = [1]\n',
         match="variants"),
    grid("unknown-section", GRID + "[extras]\nx = 1\n", match="extras"),
    grid("defaults-lr-nan", GRID.replace("epochs = 1", "epochs = 1\nlr = nan"), match="lr"),
    grid("defaults-lr-inf", GRID.replace("epochs = 1", "epochs = 1\nlr = inf"), match="lr"),
    grid("defaults-momentum-5", GRID.replace("epochs = 1", "epochs = 1\nmomentum = 5"),
         match="momentum"),
    grid("defaults-grad-clip-negative", GRID.replace("epochs = 1", "epochs = 1\ngrad_clip = -1"),
         match="grad_clip"),
    grid("defaults-dataset-options-int", GRID.replace("dataset_options = { n_train = 64, "
                                                      "n_test = 32 }", "dataset_options = 5"),
         match="dataset_options"),
    grid("analyses-int", DEFAULTS + "analyses = 5\n" + STUDY, match="analyses"),
    grid("analyses-list", DEFAULTS.replace("[defaults]", "analyses = [1]\n[defaults]") + STUDY,
         match="analyses"),
    analyses("kind-unknown", "[analyses.bogus]", match="bogus"),
    analyses("kind-not-table", "[analyses]\nhessian = 5", match="hessian"),
    analyses("param-unknown", "[analyses.hessian]\nbogus = 1", match="bogus"),
    analyses("param-type", '[analyses.hessian]\nsamples = "many"', match="samples"),
    analyses("param-negative", "[analyses.hessian]\nsamples = -1", match="samples"),
    analyses("param-nan", "[analyses.hessian]\ntol = nan", match="tol"),
    analyses("epoch-past-end", "[analyses.hessian]\nepochs = [99]", match="99"),
    analyses("epoch-word", '[analyses.hessian]\nepochs = ["middle"]', match="middle"),
    analyses("epochs-string", '[analyses.hessian]\nepochs = "last"', match="epochs"),
    analyses("seeds-string", '[analyses.surface]\nseeds = "x"', match="seeds"),
    analyses("surface-grid-huge", "[analyses.surface]\ngrid = 1000", match="grid"),
    analyses("split-unknown", '[analyses.hessian]\nsplit = "validation"', match="split"),
    Case("analyze-all-not-utf8", ("analyze-all", "{grid}", *COMMON),
         body=GRID.encode() + b"# \xff\n", match="UTF-8"),
    Case("analyze-all-unknown-kind", ("analyze-all", "{grid}", *COMMON),
         body=DEFAULTS + "[analyses.bogus]\n" + STUDY, match="bogus"),
    # ---------------------------------------------------------------- analyze
    analyze("empty-run-id", "", match="run"),
    analyze("unknown-run", "nope", match="nope"),
    analyze("sql-quote", "x' OR '1'='1", match="run"),
    analyze("sql-comment", "{run}'; --", match="run"),
    analyze("shell-substitution", "$(touch {tmp}/pwned)", match="run"),
    analyze("shell-semicolon", "; rm -rf {store}", match="run"),
    analyze("path-traversal", "../../etc/passwd", match="run"),
    analyze("glob-star", "*", match="run"),
    analyze("like-percent", "%", match="run"),
    analyze("epoch-word", "{run}", "--epoch", "abc", match="epoch"),
    analyze("epoch-missing", "{run}", "--epoch", "99", match="99"),
    analyze("epoch-negative", "{run}", "--epoch", "-1", match="epoch"),
    analyze("epoch-1e400", "{run}", "--epoch", "1e400", match="epoch"),
    analyze("epoch-empty", "{run}", "--epoch", "", match="epoch"),
    analyze("what-unknown", "{run}", "--what", "bogus", match="bogus"),
    analyze("what-empty", "{run}", "--what", "", match="what"),
    analyze("what-shell", "{run}", "--what", "hessian;touch {tmp}/pwned", match="hessian"),
    analyze("set-samples-1e400", "{run}", "--what", "hessian", "--set", "samples=1e400",
            match="samples"),
    analyze("set-samples-negative", "{run}", "--what", "hessian", "--set", "samples=-1",
            match="samples"),
    analyze("set-samples-0", "{run}", "--what", "surface", "--set", "samples=0", match="samples"),
    analyze("set-samples-nan", "{run}", "--what", "hessian", "--set", "samples=nan",
            match="samples"),
    analyze("set-samples-string", "{run}", "--what", "hessian", "--set", 'samples="abc"',
            match="samples"),
    analyze("set-tol-nan", "{run}", "--what", "hessian", "--set", "tol=nan", match="tol"),
    analyze("set-tol-negative", "{run}", "--what", "hessian", "--set", "tol=-1", match="tol"),
    analyze("set-top-k-0", "{run}", "--what", "hessian", "--set", "top_k=0", match="top_k"),
    analyze("set-trace-samples-0", "{run}", "--what", "hessian", "--set", "trace_samples=0",
            match="trace_samples"),
    analyze("set-engine-unknown", "{run}", "--what", "hessian", "--set", 'engine="warp"',
            match="engine"),
    analyze("set-split-unknown", "{run}", "--what", "hessian", "--set", 'split="validation"',
            match="split"),
    analyze("set-seed-huge", "{run}", "--what", "hessian", "--set", "seed=1e30", match="seed"),
    analyze("set-grid-0", "{run}", "--what", "surface", "--set", "grid=0", match="grid"),
    analyze("set-grid-huge", "{run}", "--what", "surface", "--set", "grid=100000", match="grid"),
    analyze("set-span-inf", "{run}", "--what", "surface", "--set", "span=inf", match="span"),
    analyze("set-span-nan", "{run}", "--what", "surface", "--set", "span=nan", match="span"),
    analyze("set-directions-unknown", "{run}", "--what", "surface", "--set",
            'directions="diagonal"', match="directions"),
    analyze("set-bn-unknown", "{run}", "--what", "surface", "--set", 'bn="maybe"', match="bn"),
    analyze("set-precision-unknown", "{run}", "--what", "surface", "--set",
            'precision="fp8"', match="precision"),
    analyze("set-pair-short", "{run}", "--what", "surface", "--set", "pair=[0]", match="pair"),
    analyze("set-unknown", "{run}", "--what", "hessian", "--set", "bogus=1", match="bogus"),
    analyze("set-no-equals", "{run}", "--set", "samples", match="key=value"),
    analyze("progress-file-unwritable", "{run}", "--what", "hessian", "--progress-file",
            "/nonexistent/p.jsonl", match="progress"),
    Case("analyze-no-store", ("analyze", "x", "--store", "{store}", "--no-progress"),
         match="store"),
    # ---------------------------------------------------------------- export, runs, list, top
    Case("export-unknown-table", ("export", "bogus", "--store", "{store}"), store="seeded",
         match="bogus"),
    Case("export-sql-table", ("export", "runs; DROP TABLE runs", "--store", "{store}"),
         store="seeded", match="table"),
    Case("export-quoted-table", ("export", 'runs"', "--store", "{store}"), store="seeded",
         match="table"),
    Case("export-empty-table", ("export", "", "--store", "{store}"), store="seeded",
         match="table"),
    Case("export-out-missing-folder", ("export", "runs", "-o", "/nonexistent/x.csv", "--store",
                                       "{store}"), store="seeded", match="/nonexistent"),
    Case("export-out-directory", ("export", "runs", "-o", "{tmp}", "--store", "{store}"),
         store="seeded", match="directory"),
    Case("export-no-store", ("export", "runs", "--store", "{store}"), match="store"),
    Case("export-sql-run-filter", ("export", "runs", "--run", "x' OR 1=1 --", "--store",
                                   "{store}"), store="seeded", expect="valid",
         why="--run is a literal run id passed as a SQL parameter: no run matches, a header-only "
             "CSV (README 'Export')"),
    Case("runs-seed-word", ("runs", "--seed", "abc", "--store", "{store}"), store="seeded",
         match="seed"),
    Case("runs-sql-status", ("runs", "--status", "x' OR '1'='1", "--store", "{store}"),
         store="seeded", expect="valid",
         why="filters are literal values passed as SQL parameters: 'no runs match'"),
    Case("runs-shell-arch", ("runs", "--arch", "$(touch {tmp}/pwned)", "--store", "{store}"),
         store="seeded", expect="valid", why="a literal value: 'no runs match', nothing executed"),
    Case("runs-no-store", ("runs", "--store", "{store}"), match="store"),
    # ---------------------------------------------------------------- a malformed meta.json
    *[Case(f"meta-{name}-{cmd[0]}", (*cmd, "--store", "{store}"), store="seeded",
           match="meta.json", extra={"meta": body})
      for name, body in (("version-string", '{"schema_version": "x"}'), ("list", "[]"),
                         ("null", "null"), ("no-version", "{}"),
                         ("binary", b"\xff\xfe\x00garbage"))
      for cmd in (("runs",), ("export", "runs"), ("analyze", "{run}", "--no-progress"),
                  ("train-all", "{grid}", "--no-progress"))],
    Case("list-unknown", ("list", "bogus"), match="bogus"),
    Case("no-command", (), match="command"),
    Case("unknown-command", ("fly",), match="fly"),
]
