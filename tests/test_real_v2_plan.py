"""`plan` on the real reBEN parquet files, checked against an independent pandas computation."""
import json

import pandas as pd
import pytest

from conftest import run_cli, shared_path

ID, OOD_TRAIN, OOD_TEST = set(range(2, 14)), {0, 1}, set(range(14, 19))
ROUTE = {("train", "id"): "train", ("validation", "id"): "val", ("test", "id"): "test",
         ("train", "oodtr"): "ood_train", ("validation", "oodtr"): "ood_val", ("test", "oodte"): "ood_test"}


def _group(names, index):
    idx = {index[n] for n in names}
    for group, members in (("id", ID), ("oodtr", OOD_TRAIN), ("oodte", OOD_TEST)):
        if idx and idx <= members:
            return group
    return None


@pytest.mark.slow
def test_plan_counts_match_pandas():
    meta = shared_path("v2", "metadata.parquet")
    extra = shared_path("v2", "metadata_for_patches_with_snow_cloud_or_shadow.parquet")
    handpicked = shared_path("v1", "seed-authors", "cloudy_handpicked_samples.csv")
    proc = run_cli("plan", "--metadata", meta, "--extra-metadata", extra, "--very-cloudy-list", handpicked, "--json")
    plan = json.loads(proc.stdout)

    # the 19 names in official order, from the seed authors' file (the parquet sorts them alphabetically)
    with open(shared_path("v1", "seed-authors", "label_indices.json")) as f:
        index = json.load(f)["BigEarthNet-19_labels"]
    df = pd.read_parquet(meta)
    df["group"] = df["labels"].map(lambda names: _group(names, index))
    expected = {name: 0 for name in ("train", "val", "test", "ood_train", "ood_val", "ood_test")}
    for (split, group), n in df.groupby(["split", "group"]).size().items():
        if (split, group) in ROUTE:
            expected[ROUTE[split, group]] += n
    ex = pd.read_parquet(extra)
    ex["group"] = ex["labels"].map(lambda names: _group(names, index))
    expected["cloudy"] = int(((ex.group == "id") & ex.contains_cloud_or_shadow).sum())
    expected["snow"] = int(((ex.group == "id") & ex.contains_seasonal_snow).sum())
    hp = pd.read_csv(handpicked, header=None, names=["s2", "s1"])
    both = pd.concat([df, ex]).drop_duplicates("s2v1_name").set_index("s2v1_name")
    found = hp.s2[hp.s2.isin(both.index)]
    expected["very_cloudy"] = int((both.loc[found, "group"] == "id").sum())

    assert {k: v["count"] for k, v in plan["subsets"].items()} == expected
    assert plan["subsets"]["train"]["count"] > 100_000  # sanity: the real archive, not an empty read
    # the hand-picked v1 pairs that reBEN no longer holds are reported, not silently lost
    assert plan["rejected"] == {"not in the archive": int((~hp.s2.isin(both.index)).sum())}
    # patches mixing groups are dropped once per list they are on
    unusable = (df.group.isna().sum() + (ex.group.isna() & ex.contains_cloud_or_shadow).sum()
                + (ex.group.isna() & ex.contains_seasonal_snow).sum() + both.loc[found, "group"].isna().sum())
    assert plan["dropped"].get("mixed_labels", 0) + plan["dropped"].get("no_19_class_label", 0) == unusable
