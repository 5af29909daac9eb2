"""The gate of Eq. 3: which detectors give p_o and p_s (`ood.detector`).

A gate is, per modality, one detector or a combination of several: the modality is out when ANY
of them says so, p = min over the members' calibrated p (each member is right about the shifts it
sees; the minimum keeps every member's alarm). `ood.detector` takes

- a name: ``mahalanobis_class`` (both modalities);
- a combination, a list or a "+"-joined name: ``[binary_head, mahalanobis_class]`` or
  ``binary_head+mahalanobis_class``;
- one per modality: ``{optical: ..., sar: ...}``, each a name or a combination.

``parse`` turns any of these into ``{modality: (names...)}``; ``label`` is its one canonical name
(what results.json, the report and the SavedModel's metadata print). No TensorFlow here: config
checks the setting with it.
"""
from __future__ import annotations

from . import detector_registry
from .protocol import MODALITIES

JOIN = "+"


def _members(value, where: str) -> tuple:
    if isinstance(value, str):
        names = [n.strip() for n in value.split(JOIN)]
    elif isinstance(value, (list, tuple)):
        names = [n.strip() if isinstance(n, str) else n for n in value]
    else:
        raise ValueError(f"{where} must be a detector name, a list of names or {{optical: ..., sar: ...}}, "
                         f"got {value!r}")
    unknown = [n for n in names if not isinstance(n, str) or n not in detector_registry.DETECTORS]
    if not names or unknown:
        raise ValueError(f"{where} must name detectors among {', '.join(detector_registry.DETECTORS)}; "
                         f"got {value!r}")
    return tuple(dict.fromkeys(names))


def parse(value, where: str = "ood.detector") -> dict:
    """``ood.detector`` → ``{modality: (detector names, in the given order, each once)}``; a
    ValueError naming ``where`` and what it got otherwise."""
    if isinstance(value, dict):
        if set(value) != set(MODALITIES):
            raise ValueError(f"{where} per modality must have exactly the keys {list(MODALITIES)}, got {sorted(value)}")
        return {m: _members(value[m], f"{where}.{m}") for m in MODALITIES}
    members = _members(value, where)
    return {m: members for m in MODALITIES}


def label(spec) -> str:
    """The canonical name of a gate: ``a`` / ``a+b`` (both modalities) or ``optical: a; sar: b+c``."""
    spec = parse(spec) if not _is_parsed(spec) else spec
    names = {m: JOIN.join(spec[m]) for m in MODALITIES}
    if len(set(names.values())) == 1:
        return names[MODALITIES[0]]
    return "; ".join(f"{m}: {names[m]}" for m in MODALITIES)


def detectors(spec) -> list:
    """Every detector a gate needs, each once."""
    spec = parse(spec) if not _is_parsed(spec) else spec
    return list(dict.fromkeys(n for m in MODALITIES for n in spec[m]))


def _is_parsed(spec) -> bool:
    return isinstance(spec, dict) and set(spec) == set(MODALITIES) and all(isinstance(v, tuple) for v in spec.values())
