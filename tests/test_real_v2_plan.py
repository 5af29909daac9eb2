"""`plan` on the real reBEN parquet files, checked against an independent pandas computation of
the seed paper's protocol (and of the region-shift hold-out)."""
import json

import pandas as pd
import pytest

from conftest import run_cli, shared_path

ID, OOD_TRAIN, OOD_TEST = set(range(2, 14)), {0, 1}, set(range(14, 19))
ROUTE = {("train", "id"): "train", ("validation", "id"): "val", ("test", "id"): "test",
         ("train", "oodtr"): "ood_train", ("validation", "oodtr"): "ood_val", ("test", "oodte"): "ood_test"}
SPLIT_SUBSETS = ("train", "val", "test", "ood_train", "ood_val", "ood_test")
HELD_OUT = ("Portugal", "Serbia")


@pytest.fixture(scope="module")
def reben():
    """The two parquet files and the hand-picked list, read with pandas, each row's label group added."""
    paths = {"meta": shared_path("v2", "metadata.parquet"),
             "extra": shared_path("v2", "metadata_for_patches_with_snow_cloud_or_shadow.parquet"),
             "handpicked": shared_path("v1", "seed-authors", "cloudy_handpicked_samples.csv")}
    # the 19 names in official order, from the seed authors' file (the parquet sorts them alphabetically)
    with open(shared_path("v1", "seed-authors", "label_indices.json")) as f:
        index = {name: i for i, name in enumerate(json.load(f)["BigEarthNet-19_labels"])}
    groups = {}

    def group(names):
        key = tuple(names)
        if key not in groups:
            idx = {index[n] for n in names}
            groups[key] = next((g for g, members in (("id", ID), ("oodtr", OOD_TRAIN), ("oodte", OOD_TEST))
                                if idx and idx <= members), None)
        return groups[key]

    columns = ["labels", "split", "country", "s2v1_name", "contains_seasonal_snow", "contains_cloud_or_shadow"]
    df, ex = pd.read_parquet(paths["meta"], columns=columns), pd.read_parquet(paths["extra"], columns=columns)
    for frame in (df, ex):
        frame["group"] = frame["labels"].map(group)
    hp = pd.read_csv(paths["handpicked"], header=None, names=["s2", "s1"])
    # the hand-picked v1 names that reBEN holds, with their rows' group and country
    columns = ["s2v1_name", "group", "country"]
    both = pd.concat([df[columns], ex[columns]]).drop_duplicates("s2v1_name")
    picked = hp.merge(both, left_on="s2", right_on="s2v1_name", how="inner")
    return paths, df, ex, picked, len(hp) - len(picked)


def _plan(paths, *extra):
    proc = run_cli("plan", "--metadata", paths["meta"], "--extra-metadata", paths["extra"],
                   "--very-cloudy-list", paths["handpicked"], "--json", *extra)
    return json.loads(proc.stdout)


def _expected(df, ex, picked):
    """Subset counts and the unusable-label drops of the protocol without a hold-out."""
    expected = dict.fromkeys(SPLIT_SUBSETS, 0)
    for (split, group), n in df.groupby(["split", "group"]).size().items():
        if (split, group) in ROUTE:
            expected[ROUTE[split, group]] += n
    expected["cloudy"] = int(((ex.group == "id") & ex.contains_cloud_or_shadow).sum())
    expected["snow"] = int(((ex.group == "id") & ex.contains_seasonal_snow).sum())
    expected["very_cloudy"] = int((picked.group == "id").sum())
    unusable = (df.group.isna().sum() + (ex.group.isna() & ex.contains_cloud_or_shadow).sum()
                + (ex.group.isna() & ex.contains_seasonal_snow).sum() + picked.group.isna().sum())
    return expected, int(unusable)


@pytest.mark.slow
def test_plan_counts_match_pandas(reben):
    paths, df, ex, picked, missing = reben
    plan = _plan(paths)
    expected, unusable = _expected(df, ex, picked)
    assert {k: v["count"] for k, v in plan["subsets"].items()} == expected
    assert plan["subsets"]["train"]["count"] > 100_000  # sanity: the real archive, not an empty read
    # the hand-picked v1 pairs that reBEN no longer holds are reported, not silently lost
    assert plan["rejected"] == {"not in the archive": missing}
    # patches mixing groups are dropped once per list they are on
    assert plan["dropped"].get("mixed_labels", 0) + plan["dropped"].get("no_19_class_label", 0) == unusable
    assert "holdout" not in plan


@pytest.mark.slow
def test_plan_with_two_held_out_countries_matches_pandas(reben):
    paths, df, ex, picked, missing = reben
    plan = _plan(paths, "--holdout-countries", ",".join(HELD_OUT))
    held = lambda frame: frame.country.isin(HELD_OUT)  # noqa: E731
    expected, _ = _expected(df[~held(df)], ex[~held(ex)], picked[~held(picked)])
    region = df[held(df)]
    expected["region_shift"] = int((region.group == "id").sum())
    expected["region_shift_ood"] = int((region.group == "oodte").sum())
    assert {k: v["count"] for k, v in plan["subsets"].items()} == expected
    assert min(expected.values()) > 0
    # every held-out patch is in a region subset or dropped as held out, and in nothing else
    dropped = {k: v for k, v in plan["dropped"].items() if k.startswith("held_out_")}
    assert dropped == {
        "held_out_in_cloudy": int((held(ex) & ex.contains_cloud_or_shadow).sum()),
        "held_out_in_snow": int((held(ex) & ex.contains_seasonal_snow).sum()),
        "held_out_in_very_cloudy": int(held(picked).sum()),
        "held_out_mixed_labels": int(region.group.isna().sum()),
        "held_out_ood_train": int((region.group == "oodtr").sum()),
    }
    holdout = plan["holdout"]
    assert holdout["countries"] == sorted(HELD_OUT)
    for name, group in (("region_shift", "id"), ("region_shift_ood", "oodte")):
        assert holdout[name] == {c: int(((region.country == c) & (region.group == group)).sum()) for c in sorted(HELD_OUT)}
    assert plan["rejected"] == {"not in the archive": missing}
