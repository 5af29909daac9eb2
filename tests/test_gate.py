"""The gate's setting (`tf_fusion.gate`): a name, a combination or one per modality, parsed into
the members of each modality's gate; one canonical label; one-line errors naming the key."""
from __future__ import annotations

import numpy as np
import pytest

from tf_fusion import gate


@pytest.mark.parametrize("value, optical, sar, label", [
    ("knn", ("knn",), ("knn",), "knn"),
    ("binary_head+mahalanobis_class", ("binary_head", "mahalanobis_class"), ("binary_head", "mahalanobis_class"),
     "binary_head+mahalanobis_class"),
    (["vim", "knn", "vim"], ("vim", "knn"), ("vim", "knn"), "vim+knn"),
    ({"optical": "vim", "sar": ["knn", "binary_head"]}, ("vim",), ("knn", "binary_head"), "optical: vim; sar: knn+binary_head"),
    ({"optical": "knn", "sar": "knn"}, ("knn",), ("knn",), "knn"),
])
def test_every_form_parses_to_the_members_of_each_modality(value, optical, sar, label):
    spec = gate.parse(value)
    assert spec == {"optical": optical, "sar": sar}
    assert gate.label(value) == gate.label(spec) == label
    assert gate.parse(label if ";" not in label else value) == spec
    assert gate.detectors(value) == list(dict.fromkeys(optical + sar))


@pytest.mark.parametrize("value, message", [
    ("energy", "ood.detector must name detectors among binary_head, .*; got 'energy'"),
    ("knn+", "ood.detector must name detectors among .*; got 'knn\\+'"),
    ([], "ood.detector must name detectors"),
    ({"optical": "knn", "radar": "knn"}, r"ood.detector per modality must have exactly the keys \['optical', 'sar'\]"),
    ({"optical": "knn"}, r"ood.detector per modality must have exactly the keys \['optical', 'sar'\], got \['optical'\]"),
    ({"optical": "knn", "sar": 3}, r"ood.detector.sar must be a detector name, a list of names .* got 3"),
    (np.float64(1.0), "ood.detector must be a detector name"),
])
def test_a_bad_gate_is_one_line_naming_the_key(value, message):
    with pytest.raises(ValueError, match=message) as e:
        gate.parse(value)
    assert "\n" not in str(e.value)
