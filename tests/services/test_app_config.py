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
