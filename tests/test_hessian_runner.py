"""The `hessian` analysis through the store: every contract column written (whole network and
per layer), the costs per part, the id independent of the process count, and 2 gloo processes
(`--gpus 2` on a CPU) equal to one process (issue 13)."""
import numpy as np
import pytest

from conftest import cli, tiny_config, trained_store
from landscape_lib.analyses.hessian.distributed import shard
from landscape_lib.analyses.provenance import run_analysis
from landscape_lib.store.queries import hessian_study_table
from landscape_lib.store.schema import WHOLE_MODEL
from landscape_lib.train.engine import train_run

# 1,100 training examples: three batches of the analysis' 512 (512, 512, 76), shared unevenly
CFG = dict(dataset_options={"n_train": 1100, "n_test": 64}, arch_options={"hidden": [8]},
           optimizer="adam", lr=0.01, epochs=2, study="T")
PARAMS = {"samples": 0, "top_k": 3, "trace_samples": 8, "density_vectors": 2,
          "density_steps": 20, "layer_steps": 4}
WHOLE = ["top_eig", "top_eig_residual", "top_eig_converged", "lam_min", "lam_min_residual",
         "lam_min_converged", "lowest_ritz", "lam_min_consistent", "convexity_ratio", "trace",
         "trace_se", "neg_share", "neg_share_se", "neg_eps", "near_zero_share", "n_products"]
LAYER = ["top_eig", "top_eig_residual", "top_eig_converged", "trace", "trace_se"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return trained_store(tmp_path_factory, **CFG)


def rows(store, table, aid):
    return store.query(f"SELECT * FROM {table} WHERE analysis_id = ?", [aid])


def test_every_column_and_cost_is_written(trained):
    store, rid = trained
    aid = run_analysis(store, rid, "hessian", "last", PARAMS)
    summary = rows(store, "hessian_summary", aid).set_index("layer")
    whole = summary.loc[WHOLE_MODEL]
    assert whole[WHOLE].notna().all(), whole[WHOLE][whole[WHOLE].isna()]
    assert whole["lam_min_consistent"] and whole["neg_eps"] == 1e-3
    assert whole["lam_min"] <= whole["lowest_ritz"] + whole["lam_min_residual"]
    layers = summary.drop(WHOLE_MODEL)
    assert len(layers) == 2 and layers["n_params"].sum() == whole["n_params"]  # two Linears
    assert layers[LAYER].notna().all().all()
    costs = rows(store, "analysis_costs", aid)
    assert costs["part"].tolist() == ["density", "top", "trace", "bottom", "per-layer"]
    assert costs["n_products"].sum() == whole["n_products"] and (costs["seconds"] > 0).all()
    assert costs.loc[costs.part == "trace", "n_products"].item() == 8
    analyses = rows(store, "analyses", aid).iloc[0]
    assert analyses["n_samples"] == 0 and analyses["engine"] == "default (hvp cached)"


def test_two_gloo_processes_equal_one_and_share_the_id(trained):
    store, rid = trained
    two = run_analysis(store, rid, "hessian", "last", PARAMS, gpus=2, force=True)
    got = {t: rows(store, t, two) for t in ("hessian_eigs", "hessian_summary", "analysis_costs")}
    assert rows(store, "analyses", two)["engine"].item() == "default (hvp cached), 2 processes"
    one = run_analysis(store, rid, "hessian", "last", PARAMS, force=True)
    assert one == two  # the process count is not part of the analysis id
    eigs = rows(store, "hessian_eigs", one).sort_values(["which", "k"])
    np.testing.assert_allclose(got["hessian_eigs"].sort_values(["which", "k"])["eigenvalue"],
                               eigs["eigenvalue"], rtol=1e-4)
    mine = got["hessian_summary"].set_index("layer").sort_index()
    ref = rows(store, "hessian_summary", one).set_index("layer").sort_index()
    for col in ("top_eig", "lam_min", "trace", "neg_share", "lowest_ritz"):
        np.testing.assert_allclose(mine[col].astype(float), ref[col].astype(float), rtol=1e-4,
                                   atol=1e-7, err_msg=col)
    # the same work: products per part equal, but a Lanczos whose stopping test is met at
    # rounding level (the all-reduce sums in another order) may take one step more or less
    mine, ref = (c.set_index("part")["n_products"] for c in
                 (got["analysis_costs"], rows(store, "analysis_costs", one)))
    assert mine.index.tolist() == ref.index.tolist()
    assert (mine - ref).abs().max() <= 1, (mine.tolist(), ref.tolist())
    assert mine.drop("bottom").tolist() == ref.drop("bottom").tolist()


def test_study_table_gives_each_runs_convexity_evidence(trained):
    """Issue 10 acceptance 7's table: accuracy and the newest Hessian row of each study run."""
    store, rid = trained
    aid = run_analysis(store, rid, "hessian", "last", PARAMS)
    other = tiny_config(**{**CFG, "seed": 1})  # no Hessian yet: its row has NULLs
    assert train_run(other, store, progress=False) == "finished"
    table = hessian_study_table(store, "T").set_index("run_id")
    assert sorted(table.index) == sorted([rid, other.run_id()])
    assert hessian_study_table(store, "no such study").empty
    got, whole = table.loc[rid], rows(store, "hessian_summary", aid).set_index("layer").loc[
        WHOLE_MODEL]
    run = store.query("SELECT final_val_acc FROM runs WHERE run_id = ?", [rid]).iloc[0]
    assert got["accuracy"] == run["final_val_acc"] and got["lambda_max"] == whole["top_eig"]
    for col in ("lam_min", "lam_min_residual", "neg_share", "lowest_ritz"):
        assert got[col] == whole[col], col
    assert got["convexity_ratio"] == pytest.approx(abs(whole["lam_min"] / whole["top_eig"]))
    assert got["lam_min_below_ritz"] == (whole["lam_min"] <= whole["lowest_ritz"])
    assert np.isnan(table.loc[other.run_id(), "lambda_max"])


def test_gpus_flag_checks_before_writing(trained):
    store, rid = trained
    res = cli("analyze", rid, "--what", "hessian", "--gpus", "0", "--store", store.root)
    assert res.returncode == 2 and "gpus=0 must be at least 1" in res.stderr
    res = cli("analyze", rid, "--what", "hessian", "--gpus", "9", "--set", "samples=512",
              "--store", store.root)
    assert res.returncode == 2 and "cannot be shared by 9 processes" in res.stderr


def test_shards_cover_every_batch_once():
    for n, world in [(10, 3), (98, 2), (7, 7)]:
        parts = [shard(n, r, world) for r in range(world)]
        idx = np.concatenate([np.arange(n)[p] for p in parts])
        assert (idx == np.arange(n)).all()
        assert max(p.stop - p.start for p in parts) - min(p.stop - p.start for p in parts) <= 1
