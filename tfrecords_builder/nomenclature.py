"""BigEarthNet constants: bands, class names, the 43→19 conversion and the class partition.

Everything that depends on BigEarthNet's naming lives here, so readers, the synthetic archive
writer and the manifest agree by construction. Labels are always mapped by *name*: v1 JSON
files carry 43-class CORINE names, v2 parquet carries 19-class names sorted alphabetically.
"""
from __future__ import annotations

import dataclasses

# Sentinel-2 bands in the order records, manifests and `tf_fusion` use (B10 is not distributed).
S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
S1_BANDS = ("VV", "VH")
BANDS = S2_BANDS + S1_BANDS
# The bands of each modality, by the name the fusion model gives it.
MODALITY_BANDS = {"optical": S2_BANDS, "sar": S1_BANDS}

# Native pixel size of each band in a 1200 m patch: 10 m → 120, 20 m → 60, 60 m → 20.
BAND_SIZE = {
    **{b: 120 for b in ("B02", "B03", "B04", "B08")},
    **{b: 60 for b in ("B05", "B06", "B07", "B8A", "B11", "B12")},
    **{b: 20 for b in ("B01", "B09")},
    "VV": 120,
    "VH": 120,
}
BAND_DTYPE = {**{b: "uint16" for b in S2_BANDS}, "VV": "float32", "VH": "float32"}

# The 19-class nomenclature in its official order (Sumbul et al., 2021).
CLASS_NAMES = (
    "Urban fabric",
    "Industrial or commercial units",
    "Arable land",
    "Permanent crops",
    "Pastures",
    "Complex cultivation patterns",
    "Land principally occupied by agriculture, with significant areas of natural vegetation",
    "Agro-forestry areas",
    "Broad-leaved forest",
    "Coniferous forest",
    "Mixed forest",
    "Natural grassland and sparsely vegetated areas",
    "Moors, heathland and sclerophyllous vegetation",
    "Transitional woodland, shrub",
    "Beaches, dunes, sands",
    "Inland wetlands",
    "Coastal wetlands",
    "Inland waters",
    "Marine waters",
)
CLASS_INDEX = {name: i for i, name in enumerate(CLASS_NAMES)}

# The 43 CORINE level-3 names of BigEarthNet v1.0 and the 19-class index each maps to
# (None: dropped from the 19-class nomenclature).
CORINE_43_TO_19 = {
    "Continuous urban fabric": 0,
    "Discontinuous urban fabric": 0,
    "Industrial or commercial units": 1,
    "Road and rail networks and associated land": None,
    "Port areas": None,
    "Airports": None,
    "Mineral extraction sites": None,
    "Dump sites": None,
    "Construction sites": None,
    "Green urban areas": None,
    "Sport and leisure facilities": None,
    "Non-irrigated arable land": 2,
    "Permanently irrigated land": 2,
    "Rice fields": 2,
    "Vineyards": 3,
    "Fruit trees and berry plantations": 3,
    "Olive groves": 3,
    "Pastures": 4,
    "Annual crops associated with permanent crops": 3,
    "Complex cultivation patterns": 5,
    "Land principally occupied by agriculture, with significant areas of natural vegetation": 6,
    "Agro-forestry areas": 7,
    "Broad-leaved forest": 8,
    "Coniferous forest": 9,
    "Mixed forest": 10,
    "Natural grassland": 11,
    "Moors and heathland": 12,
    "Sclerophyllous vegetation": 12,
    "Transitional woodland/shrub": 13,
    "Beaches, dunes, sands": 14,
    "Bare rock": None,
    "Sparsely vegetated areas": 11,
    "Burnt areas": None,
    "Inland marshes": 15,
    "Peatbogs": 15,
    "Salt marshes": 16,
    "Salines": 16,
    "Intertidal flats": None,
    "Water courses": 17,
    "Water bodies": 17,
    "Coastal lagoons": 18,
    "Estuaries": 18,
    "Sea and ocean": 18,
}


class LabelError(ValueError):
    """A label name that belongs to neither nomenclature."""


def labels_from_43(names) -> tuple[int, ...]:
    """Sorted 19-class indices of a v1 patch's 43-class names (dropped classes vanish)."""
    out = set()
    for name in names:
        if name not in CORINE_43_TO_19:
            raise LabelError(f"unknown label name: {name!r} is not a BigEarthNet 43-class name")
        idx = CORINE_43_TO_19[name]
        if idx is not None:
            out.add(idx)
    return tuple(sorted(out))


def labels_from_19(names) -> tuple[int, ...]:
    """Sorted 19-class indices of a v2 patch's 19-class names."""
    out = set()
    for name in names:
        if name not in CLASS_INDEX:
            raise LabelError(f"unknown label name: {name!r} is not a BigEarthNet 19-class name")
        out.add(CLASS_INDEX[name])
    return tuple(sorted(out))


def parse_index_set(text: str) -> tuple[int, ...]:
    """'2-13' or '0,1' or '14-16,18' → sorted class indices; ValueError echoes the input."""
    out = set()
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if lo > hi:
                    raise ValueError
                out.update(range(lo, hi + 1))
            else:
                out.add(int(part))
        except ValueError:
            raise ValueError(f"bad class index set {text!r}: expected e.g. '2-13' or '0,1'") from None
    bad = [i for i in out if not 0 <= i < len(CLASS_NAMES)]
    if bad:
        raise ValueError(f"class indices {bad} in {text!r} are outside 0-{len(CLASS_NAMES) - 1}")
    return tuple(sorted(out))


def format_index_set(indices) -> str:
    """Sorted class indices → the shortest text `parse_index_set` reads back: runs of three or
    more as ranges ('2-13', '14-16,18'), shorter ones listed ('0,1')."""
    runs, out = [], []
    for i in sorted(set(indices)):
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    for lo, hi in runs:
        out += [f"{lo}-{hi}"] if hi - lo >= 2 else [str(i) for i in range(lo, hi + 1)]
    return ",".join(out)


_GROUPS = ("in_distribution", "ood_train", "ood_test")


@dataclasses.dataclass(frozen=True)
class Partition:
    """Which 19-class indices are in-distribution, OOD for training the detectors, OOD for testing.

    The field defaults are the seed paper's partition; `DEFAULT_PARTITION` below is the one
    instance every default (CLI flags, synthetic archives, readers) derives from.
    """

    in_distribution: tuple[int, ...] = tuple(range(2, 14))
    ood_train: tuple[int, ...] = (0, 1)
    ood_test: tuple[int, ...] = tuple(range(14, 19))

    def __post_init__(self):
        groups = {name: getattr(self, name) for name in _GROUPS}
        for name, idx in groups.items():
            if not idx:
                raise ValueError(f"partition group {name} is empty")
        seen = {}
        for name, idx in groups.items():
            for i in idx:
                if i in seen:
                    raise ValueError(f"class {i} is in both {seen[i]} and {name}")
                seen[i] = name

    @classmethod
    def parse(cls, in_distribution: str, ood_train: str, ood_test: str) -> "Partition":
        """From the CLI's index-set texts ('2-13', '0,1', '14-18')."""
        return cls(parse_index_set(in_distribution), parse_index_set(ood_train), parse_index_set(ood_test))

    def group_of(self, labels) -> str:
        """'in_distribution', 'ood_train', 'ood_test', or why the patch is unusable."""
        if not labels:
            return "no_19_class_label"
        for name in _GROUPS:
            if set(labels) <= set(getattr(self, name)):
                return name
        if any(i not in self.in_distribution + self.ood_train + self.ood_test for i in labels):
            return "label_outside_partition"
        return "mixed_labels"

    def to_json(self) -> dict:
        return {k: list(v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_json(cls, d) -> "Partition":
        """Inverse of `to_json`; ValueError echoing `d` unless it holds exactly the three groups as
        lists of class indices 0-18 (manifests and configs are edited by hand)."""
        n = len(CLASS_NAMES)
        if not isinstance(d, dict) or sorted(d) != sorted(_GROUPS):
            raise ValueError(f"bad partition {d!r}: expected exactly the keys {', '.join(_GROUPS)}")
        for name in _GROUPS:
            idx = d[name]
            if not isinstance(idx, (list, tuple)) or not all(
                    isinstance(i, int) and not isinstance(i, bool) and 0 <= i < n for i in idx):
                raise ValueError(f"bad partition {d!r}: {name} must be a list of class indices 0-{n - 1}")
        try:
            return cls(*(tuple(d[name]) for name in _GROUPS))
        except ValueError as e:
            raise ValueError(f"bad partition {d!r}: {e}") from None


DEFAULT_PARTITION = Partition()
