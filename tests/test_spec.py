"""ExperimentSpec: the paper's defaults, YAML/JSON loading, and errors that name the field."""

import json

import pytest

from drl_engine.spec import (
    DEFAULT_T_GRID,
    ExperimentSpec,
    SpecError,
    generation_sample_spec,
    load_spec,
    parse_spec,
)


def test_defaults_reproduce_the_paper():
    spec = ExperimentSpec()
    assert (spec.sde.kind, spec.sde.sigma_min, spec.sde.sigma_max) == ("ve", 0.01, 50.0)
    assert (spec.sde.beta_min, spec.sde.beta_max) == (0.1, 20.0)
    assert spec.objective.l1_weight == 1e-5 and spec.objective.kl_weight == 1e-7
    assert spec.objective.t_sampling == "uniform" and spec.objective.t_eps == 1e-5
    assert (spec.train.lr, spec.train.grad_clip, spec.train.ema_decay) == (2e-4, 1.0, 0.999)
    assert spec.train.iterations == 80_000
    assert spec.evaluate.t_grid == DEFAULT_T_GRID == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    assert spec.evaluate.label_budgets == [100, 1000]
    assert (spec.sample.sampler, spec.sample.steps, spec.sample.snr, spec.sample.t_init) == ("pc", 1000, 0.16, 1.0)
    assert spec.model.code_mlp_layers == 4 and spec.model.conditioning == "bias"
    # Appendix D's MNIST network: 28x28x32 and 14x14x64, 2 residual blocks per resolution.
    assert (spec.model.base_channels, spec.model.channel_mult, spec.model.num_res_blocks,
            spec.model.attn_resolutions) == (32, [1, 2], 2, [])
    assert spec.objective.parameterization == "score" and spec.train.decoder_finetune_steps == 0


def test_yaml_and_json_give_the_same_spec(tmp_path):
    data = {"model": {"kind": "vdrl", "latent_dim": 2}, "sample": {"code_source": "grid"}}
    (tmp_path / "s.json").write_text(json.dumps(data))
    (tmp_path / "s.yaml").write_text("model: {kind: vdrl, latent_dim: 2}\nsample: {code_source: grid}\n")
    assert load_spec(tmp_path / "s.json") == load_spec(tmp_path / "s.yaml") == parse_spec(data)


@pytest.mark.parametrize("data, field, expected", [
    ({"model": {"kind": "gan"}}, "model.kind", "'vdrl'"),
    ({"model": {"encoder": "x"}}, "model.encoder", "'static' or 'time_conditioned'"),
    ({"sde": {"kind": "subvp"}}, "sde.kind", "'ve' or 'vp'"),
    ({"objective": {"t_sampling": "log"}}, "objective.t_sampling", "'uniform', 'sigma_uniform', 'fixed', 'window' or 'log_normal'"),
    ({"sample": {"sampler": "ddim"}}, "sample.sampler",
     "'pc', 'euler_maruyama', 'ode', 'heun', 'dpm_solver_pp' or 'ode_adaptive'"),
    ({"dataset": {"name": "imagenet"}}, "dataset.name", "'mnist'"),
    ({"train": {"batch_size": 0}}, "train.batch_size", "greater than or equal to 1"),
    ({"evaluate": {"t_grid": [0.5, 1.5]}}, "evaluate.t_grid.1", "less than or equal to 1 (got 1.5)"),
    ({"evaluate": {"label_budgets": [100, 0]}}, "evaluate.label_budgets.1", "greater than or equal to 2"),
    ({"model": {"channel_mult": [1, 0]}}, "model.channel_mult.1", "greater than or equal to 1 (got 0)"),
    ({"vdm": {"fourier_exponents": [7, 17]}}, "vdm.fourier_exponents.1", "less than or equal to 16"),
    ({"sde": {"sigma_min": 5, "sigma_max": 1}}, "sde.sigma_max", "sigma_min"),
    ({"dataset": {"name": "npz"}}, "dataset.path", "required"),
    ({"sample": {"code_source": "prior"}}, "sample.code_source", "vdrl"),
    ({"sample": {"code_source": "grid"}}, "sample.code_source", "latent_dim 2"),
    ({"sample": {"code_source": "interpolation"}}, "sample.code_source", "model.kind 'vdm_vae'"),
    ({"model": {"kind": "vdrl"}, "sample": {"code_source": "interpolation"}}, "sample.code_source",
     "got 'vdrl'"),
    ({"model": {"kind": "vdm"}, "sample": {"code_source": "interpolation"}}, "sample.code_source",
     "got 'vdm'"),
    ({"train": {"lr": "fast"}}, "train.lr", "valid number"),
])
def test_invalid_values_name_the_field_and_what_is_allowed(data, field, expected):
    with pytest.raises(SpecError) as err:
        parse_spec(data)
    assert field in str(err.value) and expected in str(err.value)


def test_not_a_mapping_and_unknown_keys(tmp_path):
    with pytest.raises(SpecError, match="expected a mapping"):
        parse_spec([1, 2])
    with pytest.raises(SpecError, match=r"train\.itterations: unknown field; allowed: iterations, batch_size"):
        parse_spec({"train": {"itterations": 5}})
    with pytest.raises(SpecError, match=r"modle: unknown field; allowed: name, dataset, model"):
        parse_spec({"modle": {}})
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SpecError, match="bad.json: line 1, column 2: not valid JSON"):
        load_spec(bad)
    assert parse_spec(None) == ExperimentSpec()


@pytest.mark.parametrize("data, field", [
    ({"dataset": {"name": "npz", "path": "/data/x\x00.npz"}}, "dataset.path"),
    ({"dataset": {"data_dir": "/data\x00/mnist"}}, "dataset.data_dir"),
    ({"name": "run\x00one"}, "name"),
])
def test_a_nul_byte_in_a_path_or_name_is_refused_naming_the_field(data, field):
    """No path and no PostgreSQL text can hold NUL: refused here, not as a job's or server's error."""
    with pytest.raises(SpecError) as err:
        parse_spec(data)
    assert str(err.value).startswith(f"{field}: must not contain a NUL byte")
    schema = ExperimentSpec.model_json_schema()   # and the JSON schema / OpenAPI says so
    section = schema["$defs"]["DatasetSpec"] if "." in field else schema
    string = section["properties"][field.rpartition(".")[2]]["anyOf"][0]
    assert string["pattern"] == "^[^\\u0000]*$"


def test_a_long_rejected_value_is_not_echoed_whole():
    with pytest.raises(SpecError) as err:
        parse_spec({"evaluate": {"t_grid": [2.0] * 5000}})
    assert "evaluate.t_grid" in str(err.value) and len(str(err.value)) < 300
    assert "4999 more entries alike" in str(err.value)   # one problem, not 5,000 lines
    with pytest.raises(SpecError) as err:
        parse_spec({"name": "x" * 10_000})
    assert "name" in str(err.value) and len(str(err.value)) < 300


def test_interpolation_codes_are_a_vdm_vae_sample_source():
    spec = parse_spec({"model": {"kind": "vdm_vae"}, "sample": {"code_source": "interpolation"}})
    assert spec.sample.code_source == "interpolation"
    # drl run's samples.png of a vdm_vae still draws z from the prior, whatever code_source says
    assert generation_sample_spec(spec).code_source == "prior"
