"""The process's one botocore data loader (pytest_eksid.botocore_data): shared by the runner's sessions and the
sandbox's, separate per data path, and never growing a session's search path."""

from __future__ import annotations

import botocore.session

from pytest_eksid import botocore_data
from pytest_eksid.aws import Aws

# Keys and an endpoint no request reaches: the sessions are only made, never used.
ENV = {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "x", "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}


def _loader_of(aws: Aws) -> object:
    aws._client("sts")  # the session is made with the first client
    return aws._session._session.get_component("data_loader")


def test_every_clusters_session_shares_one_loader_and_its_parsed_data() -> None:
    first, second = Aws(region="eu-west-1", env=ENV), Aws(region="us-east-1", env=ENV)
    loader = _loader_of(first)
    assert _loader_of(second) is loader is botocore_data.loader()
    # what one session's client parsed is the other's too (botocore.loaders.instance_cache keys by the call)
    cached = {key for key in loader._cache if key[0] == "load_service_model"}  # type: ignore[attr-defined]
    assert any("sts" in key for key in cached)


def test_boto3_sessions_do_not_grow_the_shared_search_path() -> None:
    _loader_of(Aws(region="eu-west-1", env=ENV))
    before = list(botocore_data.loader().search_paths)
    for _ in range(5):
        _loader_of(Aws(region="eu-west-1", env=ENV))
    assert botocore_data.loader().search_paths == before
    assert len(set(before)) == len(before)


def test_a_session_with_its_own_data_path_keeps_its_own_loader(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("AWS_DATA_PATH", str(tmp_path))
    own = botocore_data.shared(botocore.session.Session())
    assert own.get_component("data_loader") is botocore_data.loader(str(tmp_path))
    assert own.get_component("data_loader") is not botocore_data.loader()
    assert str(tmp_path) in own.get_component("data_loader").search_paths


def test_the_clusters_aws_profile_is_applied_before_the_loader_is_chosen(tmp_path, monkeypatch) -> None:
    """A cluster's awsProfile wins over the environment's AWS_PROFILE, as boto3's profile_name does: an unknown
    AWS_PROFILE must not fail the session, and the profile's own data path picks the loader."""
    data = tmp_path / "models"
    data.mkdir()
    config = tmp_path / "config"
    config.write_text(f"[profile other]\nregion = eu-west-1\ndata_path = {data}\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_PROFILE", "missing")
    aws = Aws(region="eu-west-1", env=ENV, profile_name="other")
    assert _loader_of(aws) is botocore_data.loader(str(data))
