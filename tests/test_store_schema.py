"""A store written before a schema change still opens: parts without the new columns read as
NULL there once `ensure()` (every writing command calls it) has refreshed the typed empty parts.
"""
import json

import pandas as pd

from landscape_lib.store import SCHEMA_VERSION, Store
from landscape_lib.store.schema import TABLES

NEW = {"epochs": ["train_loss_running", "train_acc_running"], "gauss_fit": ["status", "reason"]}


def test_a_store_from_before_the_new_columns_reads_them_as_null(tmp_path):
    store = Store(tmp_path / "store").ensure()
    for table, new in NEW.items():  # rewrite the store as version 1 wrote it
        old = [c for c in TABLES[table] if c not in new]
        empty = store.tables_dir / table / "_schema" / "empty.parquet"
        pd.DataFrame({c: pd.Series(dtype="float64") for c in old}).to_parquet(empty)
        row = {c: 1.0 for c in old} | {"run_id": "r", "analysis_id": "a", "epoch": 1}
        (store.tables_dir / table / "r").mkdir()
        pd.DataFrame([{c: row[c] for c in old}]).to_parquet(store.tables_dir / table / "r"
                                                            / "all.parquet")
    (store.root / "meta.json").write_text(json.dumps({"schema_version": 1}))
    reopened = Store(store.root).ensure()
    assert SCHEMA_VERSION >= 2
    for table, new in NEW.items():
        df = reopened.query(f"SELECT * FROM {table}")
        assert list(df.columns) == list(TABLES[table]) and len(df) == 1
        assert df[new].isna().all().all()
