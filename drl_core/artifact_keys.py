"""Artifact keys: where each result of an experiment lives in the store, in one place.

    experiments/<id>/checkpoints/ckpt_00001000.pt
    experiments/<id>/embeddings/<split>/t=0.500.npy
    experiments/<id>/embeddings/<split>/labels.npy
    experiments/<id>/embeddings/random_init/<split>/t=0.500.npy   (the untrained control's)
    experiments/<id>/probes/probes.json   (and probes.csv, probes.png)
    experiments/<id>/samples/<job_id>.png
    experiments/<id>/metrics/bits_per_dim.json   (VDM kinds: test-set bits/dim per ELBO term)
    experiments/<id>/logs/<job_id>.log   (a job's whole log, every attempt's, as UTF-8 text)

Keys are a pure function of what they hold (experiment, step, split, t, job), so a job that
runs twice writes the same keys again and never a second copy. The `kind` and `meta` recorded
on each Artifact row are listed here too: the API finds computed embeddings through them.
"""

from __future__ import annotations

import re
from enum import StrEnum

from drl_engine.spec import (  # one rounding for files, keys and the API; the encoder names
    ENCODER_WEIGHTS,
    TRAINED,
    EncoderWeights,
    t_key,
)


class ArtifactKind(StrEnum):
    CHECKPOINT = "checkpoint"
    EMBEDDING = "embedding"   # meta {"split": "train"|"test", "t": 0.5}
    # The untrained control's codes (random_init), meta as EMBEDDING's: a kind of their own, so
    # that nothing listing an experiment's embeddings shows them unless it asks for them.
    CONTROL_EMBEDDING = "control_embedding"
    LABELS = "labels"         # meta {"split": ...}
    PROBES = "probes"         # meta {"format": "json"|"csv"|"png"}; the json row adds "best", "control_best"
    SAMPLE = "sample"         # meta {"job_id": N, "count", "sampler", "steps", "nfe", "seconds", "code_source",
                              #       "fd_lenet" (when computed: value, ci_low, ci_high, floor, smoke, ...)}
    METRICS = "metrics"       # meta {"name": "bits_per_dim", "values": {...}}: what the file holds
    LOG = "log"               # meta {"job_id": N, "lines": n}


SPLITS = ("train", "test")
PROBE_FORMATS = ("json", "csv", "png")
METRICS_NAMES = ("bits_per_dim",)
_CHECKPOINT_NAME = re.compile(r"ckpt_(\d{8,})\.pt$")


def experiment_prefix(experiment_id: int) -> str:
    return f"experiments/{int(experiment_id)}/"


def checkpoint_key(experiment_id: int, step: int) -> str:
    return f"{experiment_prefix(experiment_id)}checkpoints/ckpt_{int(step):08d}.pt"


def checkpoint_step(key: str) -> int:
    """The training step in a checkpoint key (ValueError naming the key if it is not one)."""
    match = _CHECKPOINT_NAME.search(key)
    if match is None:
        raise ValueError(f"artifact key {key!r}: not a checkpoint key (…/ckpt_XXXXXXXX.pt)")
    return int(match.group(1))


def _split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {', '.join(SPLITS)}, got {split!r}")
    return split


def _encoder(encoder: str) -> EncoderWeights:
    if encoder not in ENCODER_WEIGHTS:
        raise ValueError(f"encoder: expected one of {', '.join(ENCODER_WEIGHTS)}, got {encoder!r}")
    return encoder


def embedding_kind(encoder: EncoderWeights = TRAINED) -> ArtifactKind:
    """The Artifact kind of an encoder's stored codes: EMBEDDING, or CONTROL_EMBEDDING."""
    return ArtifactKind.EMBEDDING if _encoder(encoder) == TRAINED else ArtifactKind.CONTROL_EMBEDDING


def embedding_key(experiment_id: int, split: str, t: float,
                  encoder: EncoderWeights = TRAINED) -> str:
    """The trained encoder's codes at embeddings/<split>/, the untrained control's at
    embeddings/random_init/<split>/."""
    folder = "" if _encoder(encoder) == TRAINED else f"{encoder}/"
    return (f"{experiment_prefix(experiment_id)}embeddings/{folder}{_split(split)}/"
            f"t={t_key(t):.3f}.npy")


def labels_key(experiment_id: int, split: str) -> str:
    return f"{experiment_prefix(experiment_id)}embeddings/{_split(split)}/labels.npy"


def probes_key(experiment_id: int, fmt: str = "json") -> str:
    if fmt not in PROBE_FORMATS:
        raise ValueError(f"probes format: expected one of {', '.join(PROBE_FORMATS)}, got {fmt!r}")
    return f"{experiment_prefix(experiment_id)}probes/probes.{fmt}"


def sample_key(experiment_id: int, job_id: int) -> str:
    return f"{experiment_prefix(experiment_id)}samples/{int(job_id)}.png"


def metrics_key(experiment_id: int, name: str) -> str:
    if name not in METRICS_NAMES:
        raise ValueError(f"metrics name: expected one of {', '.join(METRICS_NAMES)}, got {name!r}")
    return f"{experiment_prefix(experiment_id)}metrics/{name}.json"


def log_key(experiment_id: int, job_id: int) -> str:
    return f"{experiment_prefix(experiment_id)}logs/{int(job_id)}.log"
