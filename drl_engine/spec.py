"""`ExperimentSpec`: the one description of an experiment.

The CLI reads it from YAML or JSON, the API accepts it as JSON, the worker hands it to the
engine. Defaults reproduce the paper (Abstreiter, Mittal et al., "Diffusion-Based
Representation Learning", appendix D); every bound is checked here so that an invalid spec
fails with a message naming the field and what was expected, before any work starts.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

DEFAULT_T_GRID = [round(0.1 * i, 1) for i in range(11)]

DatasetName = Literal["mnist", "fashion_mnist", "cifar10", "digits", "npz"]
# drl/vdrl: the first paper's score model with a code. vdm_vae: a VAE whose decoder is a
# continuous-time VDM conditioned on z; vdm: the same decoder without encoder (the second
# paper's baseline). The first paper's baselines (appendix E, figure 4), each with DRL's
# encoder architecture and latent size (drl_engine/baselines/, formulas there):
#   ae            autoencoder, ||D(E(x0)) - x0||^2; code E(x0), t-independent
#   vae           Gaussian encoder + decoder, negative ELBO; code the mean of q(z|x0)
#   dae           denoising autoencoder, ||D(E(x_t)) - x0||^2; code at t: E(x_t), seeded noise
#   cdae          conditional DAE, one-step denoiser D(x_t, t, E(x0, t)) -> x0; code E(x0, t)
#   simclr_gauss  SimCLR whose only augmentation is noise at sigma(t); code at t: E(x_t)
# The engine refuses any kind it has no model for with a SpecError naming `model.kind`.
ModelKind = Literal["drl", "vdrl", "vdm_vae", "vdm", "ae", "vae", "dae", "cdae", "simclr_gauss"]
VDM_KINDS = ("vdm_vae", "vdm")
# The encoder setting each baseline's definition fixes: only cdae's encoder sees t.
BASELINE_ENCODER: dict[str, str] = {"ae": "static", "vae": "static", "dae": "static",
                                    "cdae": "time_conditioned", "simclr_gauss": "static"}
BASELINE_KINDS = tuple(BASELINE_ENCODER)
# Kinds with no learned code: the encode and probe stages do not apply. Kept here, torch-free,
# so the job planner (drl_core) and the API can ask without importing the engine's models.
KINDS_WITHOUT_ENCODER = frozenset({"vdm"})


def has_encoder(kind: str) -> bool:
    """Whether `model.kind` learns a code (so it is encoded and probed)."""
    return kind not in KINDS_WITHOUT_ENCODER


def has_sampler(kind: str) -> bool:
    """Whether `model.kind` generates samples (the sample stage); baselines do not."""
    return kind not in BASELINE_KINDS


EncoderKind = Literal["static", "time_conditioned"]
Conditioning = Literal["bias", "scale_shift"]
SDEKind = Literal["ve", "vp"]
TSampling = Literal["uniform", "sigma_uniform", "fixed", "window", "log_normal"]
# What the network outputs: `score` (the paper's, score-SDE's scale_by_sigma / eps-prediction)
# or `edm` (Karras et al. 2022's preconditioned denoiser, trained with EDM's loss weight).
Parameterization = Literal["score", "edm"]
# The kinds whose network is a code-conditioned score model (DRLModel): the EDM
# parameterization and the decoder fine-tune phase apply to them only.
SCORE_MODEL_KINDS = ("drl", "vdrl")
ProbeName = Literal["svc", "linear", "mlp", "silhouette"]
# The samplers of generated images (drl_engine/sampling/: one module each, formulas there):
# score-SDE's predictor-corrector, Euler-Maruyama and fixed-step probability-flow ODE; EDM's
# Heun, DPM-Solver++(2M) and the adaptive (dopri5) probability-flow ODE.
SamplerName = Literal["pc", "euler_maruyama", "ode", "heun", "dpm_solver_pp", "ode_adaptive"]
PriorName = Literal["gaussian", "uniform_gaussian"]
# Where a sample's codes come from: encoding test images (reconstructions), a grid over a 2-d
# latent space, the prior N(0, I) (vdrl, vdm_vae), or the segments between the codes of pairs
# of test images (vdm_vae; sample.count = pairs x points, drl_engine/generate.py).
CodeSource = Literal["encoded", "grid", "prior", "interpolation"]
DeviceName = Literal["auto", "cpu", "cuda"]
GammaSchedule = Literal["learned", "learned_fixed_ends", "fixed"]


def t_key(t: float) -> float:
    """A diffusion time in canonical form (3 decimals), so 0.1 + 0.2 and 0.3 name the same
    encoding, file and artifact key. Torch-free: the API and drl_core use it too."""
    return round(float(t), 3)


# Whose codes a stored embedding or a probe table holds: the trained encoder, or the untrained
# control of the same architecture and seed (`registry.untrained_model`), probed beside it so
# that an untrained code is never mistaken for a learned one. Torch-free: drl_core and the API
# name stored embeddings and probe rows with it.
EncoderWeights = Literal["trained", "random_init"]
TRAINED: EncoderWeights = "trained"
RANDOM_INIT: EncoderWeights = "random_init"
ENCODER_WEIGHTS: tuple[EncoderWeights, ...] = (TRAINED, RANDOM_INIT)


class SpecError(ValueError):
    """An invalid spec; the message names the field (dotted path) and what was expected."""


def refuse_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain a NUL byte (\\x00)")
    return value


# Free text that reaches a file path or a database text column, neither of which can hold a
# NUL byte (the OS refuses one in a path, PostgreSQL in text): refused where a spec enters,
# naming the field, rather than failing later in a job or as a server error. The validator
# checks (with a readable message); the pattern says the same in the JSON schema / OpenAPI.
NUL_FREE = (AfterValidator(refuse_nul), Field(json_schema_extra={"pattern": r"^[^\u0000]*$"}))
Text = Annotated[str, *NUL_FREE]


class _Section(BaseModel):
    # Unknown keys are errors: a typo in a spec must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DatasetSpec(_Section):
    name: DatasetName = "mnist"
    # `npz` only: the user's file with x_train (N,H,W[,C] uint8), optional y_train/x_test/y_test.
    path: Text | None = None
    # Where the standard files live; None means $DRL_DATA_DIR, then ./data.
    data_dir: Text | None = None
    # Use only the first N training / test images (tiny CPU runs, tests). None = all.
    train_limit: int | None = Field(default=None, ge=1)
    test_limit: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _npz_needs_path(self) -> DatasetSpec:
        if self.name == "npz" and not self.path:
            raise ValueError("dataset.path is required when dataset.name is 'npz'")
        return self


class ModelSpec(_Section):
    kind: ModelKind = "drl"
    encoder: EncoderKind = "static"
    latent_dim: int = Field(default=8, ge=1, le=4096)
    # Score U-Net (score-SDE DDPM++ layout) as the paper's appendix D sizes it for MNIST:
    # 28x28x32 and 14x14x64 feature maps, 2 residual blocks per resolution. The appendix names
    # no attention resolution, so there is none by default.
    base_channels: int = Field(default=32, ge=4, le=1024)
    # Per-entry bounds on the item type (not in a validator), so the JSON schema states them.
    channel_mult: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [1, 2], min_length=1, max_length=6)
    num_res_blocks: int = Field(default=2, ge=1, le=8)
    # Resolutions (feature-map side in pixels) that get a self-attention block.
    attn_resolutions: list[int] = Field(default_factory=list)
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    conditioning: Conditioning = "bias"
    # The code goes through this many dense layers before joining embed(t) (paper: four).
    code_mlp_layers: int = Field(default=4, ge=1, le=8)


class SDESpec(_Section):
    kind: SDEKind = "ve"
    sigma_min: float = Field(default=0.01, gt=0)
    sigma_max: float = Field(default=50.0, gt=0)
    beta_min: float = Field(default=0.1, gt=0)
    beta_max: float = Field(default=20.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> SDESpec:
        if self.sigma_max <= self.sigma_min:
            raise ValueError(f"sde.sigma_max must exceed sde.sigma_min ({self.sigma_min})")
        if self.beta_max <= self.beta_min:
            raise ValueError(f"sde.beta_max must exceed sde.beta_min ({self.beta_min})")
        return self


class ObjectiveSpec(_Section):
    """How the score model is trained (drl_engine/objective.py has the formulas).

    t_sampling: `uniform` t ~ U(t_eps, 1) (the paper); `sigma_uniform` std ~ U (high-noise
    focus); `fixed` t = t_fixed; `window` t ~ U(t_lo, t_hi); `log_normal` EDM's
    ln sigma ~ N(p_mean, p_std^2), sigma mapped back to t and clamped to [t_eps, 1].
    parameterization: `score` (the paper's, default) or `edm` (Karras et al. 2022's
    preconditioned denoiser D(x; sigma, z) with loss weight (sigma^2 + sigma_data^2) /
    (sigma sigma_data)^2; `sigma_data` None estimates the data's std from the training split).
    """

    t_sampling: TSampling = "uniform"
    t_fixed: float | None = Field(default=None, gt=0, le=1)
    # `window` only: the interval t is drawn from.
    t_lo: float | None = Field(default=None, ge=0, lt=1)
    t_hi: float | None = Field(default=None, gt=0, le=1)
    # `log_normal` only: EDM's defaults (their data lies in [-1, 1]).
    p_mean: float = Field(default=-1.2, ge=-20, le=20)
    p_std: float = Field(default=1.2, gt=0, le=20)
    # Smallest t drawn in training (score-SDE's eps for the continuous objective).
    t_eps: float = Field(default=1e-5, gt=0, lt=0.5)
    l1_weight: float = Field(default=1e-5, ge=0)   # DRL: gamma * ||z||_1
    kl_weight: float = Field(default=1e-7, ge=0)   # VDRL: beta * KL(q(z|x) || N(0, I))
    parameterization: Parameterization = "score"
    sigma_data: float | None = Field(default=None, gt=0, le=100)

    @model_validator(mode="after")
    def _sampling_needs_its_fields(self) -> ObjectiveSpec:
        if self.t_sampling == "fixed" and self.t_fixed is None:
            raise ValueError("objective.t_fixed is required when objective.t_sampling is 'fixed'")
        if self.t_sampling == "window":
            if self.t_lo is None or self.t_hi is None:
                raise ValueError("objective.t_lo and objective.t_hi are required when "
                                 "objective.t_sampling is 'window'")
            if self.t_hi <= self.t_lo:
                raise ValueError(f"objective.t_hi must exceed objective.t_lo ({self.t_lo}), "
                                 f"got {self.t_hi}")
        return self


class VDMSpec(_Section):
    """The VDM decoder of `vdm_vae` and `vdm` (Kingma et al. 2021); other kinds ignore it.

    gamma(t) = -log SNR(t) runs from gamma(0) to gamma(1). 'learned' is the paper's: the
    endpoints are learned on the ELBO, starting at gamma_min and gamma_max (the paper's
    -13.3 and 5.0), and the monotone network's shape in between is trained to minimise the
    variance of the loss; 'learned_fixed_ends' learns the shape but keeps the endpoints fixed
    at gamma_min and gamma_max (checkpoints from before the endpoints were learned load as
    this); 'fixed' is the linear gamma_min + (gamma_max - gamma_min) t. The eps-network's
    noise input is scaled by the configured gamma_min and gamma_max in every case. It sees
    Fourier features sin/cos(2^n pi x) of its input for n in `fourier_exponents` (the paper's
    7 and 8; [] turns them off).
    KL annealing (weight min(1, step / kl_anneal_steps)) and free bits (each latent dimension's
    batch-mean KL counted as at least `free_bits` nats) change the training objective away
    from the ELBO; both are off (0) by default, and the reported bits/dim is always the ELBO.
    """

    schedule: GammaSchedule = "learned"
    gamma_min: float = Field(default=-13.3, ge=-30.0, le=30.0)
    gamma_max: float = Field(default=5.0, ge=-30.0, le=30.0)
    schedule_features: int = Field(default=1024, ge=1, le=65_536)   # hidden width of l2
    fourier_exponents: list[Annotated[int, Field(ge=0, le=16)]] = Field(
        default_factory=lambda: [7, 8], max_length=16)
    kl_anneal_steps: int = Field(default=0, ge=0)
    free_bits: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> VDMSpec:
        if self.gamma_max <= self.gamma_min:
            raise ValueError(f"vdm.gamma_max must exceed vdm.gamma_min ({self.gamma_min})")
        return self


class TrainSpec(_Section):
    iterations: int = Field(default=80_000, ge=1)
    batch_size: int = Field(default=128, ge=1, le=65_536)
    lr: float = Field(default=2e-4, gt=0, le=1.0)
    warmup: int = Field(default=5000, ge=0)
    grad_clip: float = Field(default=1.0, gt=0)
    ema_decay: float = Field(default=0.999, ge=0, lt=1)
    seed: int = Field(default=0, ge=0)
    checkpoint_every: int = Field(default=5000, ge=1)
    # After `iterations` steps: this many more with the encoder (and its EMA) frozen and the
    # score network trained on uniform t, so a model whose encoder was trained on a window or
    # a high-noise focus still samples over the whole range (drl/vdrl only).
    decoder_finetune_steps: int = Field(default=0, ge=0)
    log_every: int = Field(default=100, ge=1)
    device: DeviceName = "auto"

    @property
    def total_steps(self) -> int:
        """Optimiser steps in all: the main phase and the decoder fine-tune phase."""
        return self.iterations + self.decoder_finetune_steps


class EvaluateSpec(_Section):
    t_grid: list[Annotated[float, Field(ge=0.0, le=1.0)]] = Field(
        default_factory=lambda: list(DEFAULT_T_GRID), min_length=1)
    probes: list[ProbeName] = Field(default_factory=lambda: ["svc", "linear", "mlp", "silhouette"])
    # Few-shot SVC label budgets (paper appendix E: 100 and 1000). 'svc' reports each budget
    # twice: svc_<n> on raw codes (the paper's protocol) and svc_<n>_std on standardized ones.
    # At least 2: an SVC needs labelled examples of two classes.
    label_budgets: list[Annotated[int, Field(ge=2)]] = Field(
        default_factory=lambda: [100, 1000], min_length=1)
    # Linear and MLP probes train on at most this many labelled embeddings (a seeded,
    # stratified subset); None = all training labels, as in the paper. CPU runs cap it.
    probe_train_limit: int | None = Field(default=None, ge=10)
    # The best t of every probe is chosen on this many training embeddings held out from the
    # probes' training set (a seeded stratified subset, the same at every t), never on the
    # test split. Capped for small training splits (probes.validation_split says how).
    validation_size: int = Field(default=1000, ge=1)
    # The code-usage diagnostic (drl_engine/code_usage.py, drl and vdrl) denoises this many
    # test images (a seeded stratified subset) at every checkpoint; 0 turns it off.
    code_usage_images: int = Field(default=256, ge=0, le=10_000)
    batch_size: int = Field(default=500, ge=1)
    seed: int = Field(default=0, ge=0)


class SampleSpec(_Section):
    sampler: SamplerName = "pc"
    # N steps over the full [eps, 1]; t_init < 1 takes round(N t_init) of them (sampling/grid.py).
    # ode_adaptive ignores it: its tolerances choose its steps.
    steps: int = Field(default=1000, ge=1, le=100_000)
    t_init: float = Field(default=1.0, gt=0, le=1.0)
    prior: PriorName = "gaussian"
    code_source: CodeSource = "encoded"
    count: int = Field(default=64, ge=1, le=4096)
    snr: float = Field(default=0.16, gt=0)
    corrector_steps: int = Field(default=1, ge=0, le=10)
    eps: float = Field(default=1e-3, gt=0, lt=0.5)   # sampling ends at t = eps
    # ode_adaptive's dopri5 tolerances: a step is accepted when its error estimate is below
    # atol + rtol |x| (RMS over the batch). Below 1e-7 float32 cannot resolve the error.
    rtol: float = Field(default=1e-5, ge=1e-7, le=0.1)
    atol: float = Field(default=1e-5, ge=1e-7, le=0.1)
    grid_range: float = Field(default=2.0, gt=0)     # grid codes span [-r, r]^2
    seed: int = Field(default=0, ge=0)


class ExperimentSpec(_Section):
    name: Annotated[str, Field(max_length=200), *NUL_FREE] | None = None
    dataset: DatasetSpec = Field(default_factory=DatasetSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    sde: SDESpec = Field(default_factory=SDESpec)
    objective: ObjectiveSpec = Field(default_factory=ObjectiveSpec)
    vdm: VDMSpec = Field(default_factory=VDMSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    evaluate: EvaluateSpec = Field(default_factory=EvaluateSpec)
    sample: SampleSpec = Field(default_factory=SampleSpec)

    @model_validator(mode="after")
    def _cross_section(self) -> ExperimentSpec:
        # vdm is unconditional: it ignores code_source, so 'prior' is accepted for it; not
        # 'interpolation', which promises codes between two images that vdm does not have.
        if self.sample.code_source == "prior" and self.model.kind not in ("vdrl", "vdm_vae", "vdm"):
            raise ValueError("sample.code_source 'prior' needs model.kind 'vdrl' or 'vdm_vae' "
                             "(a code distribution to draw from); use 'encoded' or 'grid'")
        if self.model.kind == "vdm_vae" and self.model.encoder != "static":
            raise ValueError("model.encoder: vdm_vae's code z is t-independent, so its encoder "
                             f"must be 'static', got {self.model.encoder!r}")
        required = BASELINE_ENCODER.get(self.model.kind, self.model.encoder)
        if self.model.encoder != required:
            raise ValueError(f"model.encoder: the {self.model.kind} baseline's encoder is "
                             f"{required!r} by definition, got {self.model.encoder!r}")
        if self.sample.code_source == "interpolation" and self.model.kind != "vdm_vae":
            raise ValueError("sample.code_source 'interpolation' needs model.kind 'vdm_vae' (its "
                             "decoder walks between two images' codes), got "
                             f"{self.model.kind!r}; use 'encoded' or 'grid'")
        if self.model.kind not in SCORE_MODEL_KINDS:
            if self.objective.parameterization != "score":
                raise ValueError(f"objective.parameterization 'edm' needs model.kind 'drl' or "
                                 f"'vdrl', got {self.model.kind!r}")
            if self.train.decoder_finetune_steps:
                raise ValueError(f"train.decoder_finetune_steps needs model.kind 'drl' or "
                                 f"'vdrl' (a score network beside an encoder), got "
                                 f"{self.model.kind!r}")
        if self.sample.code_source == "grid" and self.model.latent_dim != 2:
            raise ValueError("sample.code_source 'grid' needs model.latent_dim 2, "
                             f"got {self.model.latent_dim}")
        return self


def generation_sample_spec(spec: ExperimentSpec) -> SampleSpec:
    """The settings of a model's samples (`drl run`'s samples.png, the service's sample job):
    `spec.sample`, except that `vdm_vae` draws z from the prior, since the VAE's generative
    claim is p(x) = E_p(z) p(x|z); its reconstructions ask for code_source 'encoded' explicitly."""
    if spec.model.kind == "vdm_vae":
        return spec.sample.model_copy(update={"code_source": "prior"})
    return spec.sample


MAX_SHOWN_VALUE = 100


def shown_value(value: Any) -> str:
    """repr of a rejected value, cut to MAX_SHOWN_VALUE characters (a 10,000-entry t_grid
    must not be echoed whole)."""
    text = repr(value)
    if len(text) <= MAX_SHOWN_VALUE:
        return text
    return f"{text[:MAX_SHOWN_VALUE]}... ({len(text)} characters)"


def allowed_fields(loc: tuple) -> list[str]:
    """The field names of the spec section an unknown key at `loc` was found in."""
    model: type[BaseModel] = ExperimentSpec
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def merged_list_errors(errors: Iterable[Mapping[str, Any]]) -> list[tuple[Mapping[str, Any], int]]:
    """pydantic's errors, with the entries of one list that fail alike merged into the first:
    (error, how many more entries it stands for). A 5,000-entry t_grid out of range is one
    problem, not 5,000 lines."""
    merged: list[tuple[Mapping[str, Any], int]] = []
    first_of: dict[tuple, int] = {}
    for e in errors:
        loc = tuple(e.get("loc", ()))
        if loc and isinstance(loc[-1], int):   # an entry of a list
            key = (loc[:-1], e.get("type"), e.get("msg"))
            if key in first_of:
                error, more = merged[first_of[key]]
                merged[first_of[key]] = (error, more + 1)
                continue
            first_of[key] = len(merged)
        merged.append((e, 0))
    return merged


def more_entries(more: int) -> str:
    """What a merged list error adds to its message."""
    return f" (and {more} more {'entry' if more == 1 else 'entries'} alike)" if more else ""


def format_validation_error(err: ValidationError) -> str:
    """One line per problem: `field.path: what was expected (got VALUE)`."""
    lines = []
    for e, more in merged_list_errors(err.errors()):
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            fields = allowed_fields(e["loc"])
            msg = "unknown field" + (f"; allowed: {', '.join(fields)}" if fields else "")
        got = e.get("input")
        where = f"{loc}: " if loc and not msg.startswith(loc) else ""
        show = e["type"] not in ("missing", "extra_forbidden") and not isinstance(got, dict)
        lines.append(f"{where}{msg}" + (f" (got {shown_value(got)})" if show else "") + more_entries(more))
    return "; ".join(lines)


def parse_spec(data: Any) -> ExperimentSpec:
    """Validate a mapping into an ExperimentSpec, raising SpecError with field-named messages."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(f"spec: expected a mapping of sections, got {type(data).__name__}")
    try:
        return ExperimentSpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(format_validation_error(err)) from None


def syntax_error_message(err: yaml.YAMLError | json.JSONDecodeError) -> str:
    """`line L, column C: not valid YAML (what the parser expected)`, 1-based, as editors count;
    without the parser's multi-line excerpt of the file."""
    if isinstance(err, json.JSONDecodeError):
        return f"line {err.lineno}, column {err.colno}: not valid JSON ({err.msg})"
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    context = getattr(err, "context", None)
    what = f"{context}, {problem}" if context else problem
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}not valid YAML ({what})"


def read_spec_file(path: str | Path) -> Any:
    """The unvalidated content of a YAML (.yaml/.yml) or JSON (.json) spec file (None when
    empty); SpecError naming the file when it cannot be read or parsed."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SpecError(f"{path}: spec file not found") from None
    except IsADirectoryError:
        raise SpecError(f"{path}: is a folder, expected a spec file") from None
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
        raise SpecError(f"{path}: cannot read spec file ({reason})") from None
    try:
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as err:
        raise SpecError(f"{path}: {syntax_error_message(err)}") from None


def load_spec(path: str | Path) -> ExperimentSpec:
    """Read and validate a spec from a YAML (.yaml/.yml) or JSON (.json) file."""
    data = read_spec_file(path)
    try:
        return parse_spec(data)
    except SpecError as err:
        raise SpecError(f"{path}: {err}") from None
