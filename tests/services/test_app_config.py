"""serve_config.yaml is a valid Serve config whose import path builds the app."""

from pathlib import Path

import pytest
import yaml

from services.config import ServiceConfig

ROOT = Path(__file__).resolve().parents[2]


def test_serve_config_is_valid_and_builds_the_app():
    from ray.serve import Application
    from ray.serve.schema import ServeDeploySchema

    raw = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    schema = (
        ServeDeploySchema.model_validate(raw)
        if hasattr(ServeDeploySchema, "model_validate")
        else ServeDeploySchema.parse_obj(raw)
    )
    (app,) = schema.applications
    assert app.import_path == "services.app:build_app"
    deployments = {d["name"]: d for d in raw["applications"][0]["deployments"]}
    assert set(deployments) == {"Ingress", "Embedder", "Retriever", "Scorer"}
    assert all("autoscaling_config" in d for d in deployments.values())
    # Fractional CPUs that fit 2 cores, leaving room for the proxies and the controller.
    assert (
        sum(
            d["ray_actor_options"]["num_cpus"] * d["autoscaling_config"]["max_replicas"]
            for d in deployments.values()
        )
        <= 2
    )
    from services.app import build_app

    assert isinstance(build_app(app.args), Application)


def test_service_config_names_bad_values():
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        ServiceConfig(k=0)
    with pytest.raises(ValueError, match="unknown service setting"):
        ServiceConfig.from_args({"nope": 1})
    with pytest.raises(ValueError, match="need longterm_log_uri"):
        ServiceConfig(ab_arms={"q-personalised": 0.5, "production": 0.5})
    assert ServiceConfig(data_root="/x").log_uri == "/x/logs/service"


LONGTERM = {"longterm_log_uri": "/logs/history"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"ab_arms": {"production": 1, "nope": 1}}, r"unknown A/B arm\(s\) \['nope'\]"),
        ({"batch_wait_s": -0.001}, r"batch_wait_s must be >= 0, got -0.001"),
        ({"grpc_batch_wait_s": float("nan")}, r"grpc_batch_wait_s must be >= 0, got nan"),
        (
            {**LONGTERM, "ab_arms": {"q-control": 1}},
            "needs its variant in longterm_variants",
        ),
        ({"ab_arms": {"blend": 0.5, "production": 0.5}}, r"\['blend'\] need longterm_log_uri"),
        ({"ab_arms": {"q-personalised": 1}}, r"\['q-personalised'\] need longterm_log_uri"),
        ({**LONGTERM, "blend_weight": 1.5}, r"blend_weight must be in \[0, 1\], got 1.5"),
        ({**LONGTERM, "blend_weight": -0.1}, r"blend_weight must be in \[0, 1\], got -0.1"),
        ({**LONGTERM, "blend_weight": float("nan")}, r"blend_weight must be in \[0, 1\]"),
        ({**LONGTERM, "blend_variant": "greedy"}, r"blend_variant names unknown Q-scorer"),
        ({**LONGTERM, "longterm_variants": ["sticky"]}, "longterm_variants names unknown"),
        ({**LONGTERM, "longterm_temperature": 0.0}, "longterm_temperature must be > 0"),
        ({**LONGTERM, "longterm_engine": "spark"}, "longterm_engine must be 'ray' or 'pyarrow'"),
        ({**LONGTERM, "longterm_model": {"horizon": 30}}, "unknown longterm_model setting"),
        ({**LONGTERM, "longterm_model": {"horizon_days": 1}}, "horizon_days must be >= 2"),
        ({"ab_arms": {"production": -1.0, "logging": 1}}, "shares must be finite numbers >= 0"),
        ({"ab_arms": {"production": 0, "logging": 0}}, "must not all be 0"),
    ],
)
def test_ab_arm_settings_are_validated_with_a_clear_message(args, message):
    with pytest.raises(ValueError, match=message):
        ServiceConfig.from_args(args)


def test_a_valid_ab_test_config_passes_and_survives_the_round_trip():
    args = {
        **LONGTERM,
        "ab_arms": {"production": 1, "q-personalised": 1, "q-control": 1, "blend": 1},
        "longterm_variants": ["personalised", "control"],
        "blend_variant": "unpersonalised",  # need not be an arm of its own
        "blend_weight": 0.0,
        "longterm_model": {"horizon_days": 30},
    }
    config = ServiceConfig.from_args(args)
    assert config.longterm_variants == ("personalised", "control")
    assert ServiceConfig.from_args(config.to_dict()) == config
    assert ServiceConfig.from_args({**args, "blend_weight": 1}).blend_weight == 1


def test_served_variants_are_the_long_term_pipelines_arms():
    from rl.experiments.ab_test import BASE_ARMS
    from services.core.longterm_arms import LONGTERM_VARIANTS

    assert tuple(LONGTERM_VARIANTS) == tuple(BASE_ARMS)
