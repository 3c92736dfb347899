"""The in-repository facts about Slack, held against Slack's own published files.

The tests and fakes use only what is in this repository: the request and answer shapes of
``sandbox/slack_shapes.py``, the Web API method table of ``sandbox/slack_methods.py``
and the manifest rules of ``tests/test_manifest.py``. Here they are compared with the files
Slack publishes (its SDK's request fixtures, its Web API OpenAPI spec, its manifest JSON
Schema), read from the shared folder beside the clone. Without that folder every test here
is skipped for one reason, shown once (see ``tests/conftest.py``); CI runs them.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl

import jsonschema
import pytest
import yaml

from tests.fakes import slack_shapes as shapes
from tests.fakes.paths import REPO_ROOT, SHARED, SLACK_MANIFEST_SCHEMA, SLACK_OPENAPI, slack_fixture
from tests.fakes.slack_methods import EXTRA_REQUIRED, NEWER_THAN_SPEC, SPEC_METHODS

pytestmark = pytest.mark.slack_published


def fixture(name: str) -> Any:
    return json.loads(slack_fixture(name).read_text(encoding="utf-8"))


# Fields only an Enterprise Grid workspace sends, and optional flags of a text object.
NOT_OURS = frozenset({"enterprise_id", "enterprise_name", "emoji"})
# Objects keyed by ids the app chose (block_id, then action_id): compared entry by entry.
KEYED_BY_ID = frozenset({"values"})


def shape_differences(ours: Any, real: Any, where: str = "$") -> list[str]:
    """Where ``ours`` lacks a field ``real`` has, or has it with another JSON type.

    ``null`` on either side matches anything (Slack sends null for what is unset); a list is
    compared by its first items; extra fields on our side are allowed.
    """
    if ours is None or real is None:
        return []
    if isinstance(real, dict):
        if not isinstance(ours, dict):
            return [f"{where}: object expected, got {type(ours).__name__}"]
        if where.rsplit(".", 1)[-1] in KEYED_BY_ID or where.endswith(".<id>"):
            if ours and real:
                return shape_differences(next(iter(ours.values())), next(iter(real.values())), f"{where}.<id>")
            return []
        out: list[str] = []
        for key, value in real.items():
            if key in NOT_OURS:
                continue
            if key not in ours:
                out.append(f"{where}.{key}: missing")
            else:
                out.extend(shape_differences(ours[key], value, f"{where}.{key}"))
        return out
    if isinstance(real, list):
        if not isinstance(ours, list):
            return [f"{where}: array expected, got {type(ours).__name__}"]
        return shape_differences(ours[0], real[0], f"{where}[0]") if ours and real else []
    if type(ours) is not type(real):
        return [f"{where}: {type(real).__name__} expected, got {type(ours).__name__}"]
    return []


def test_shape_differences_finds_what_differs() -> None:
    assert shape_differences({"a": {"b": 1}, "c": [{"d": "x"}]}, {"a": {"b": 2}, "c": [{"d": "y"}]}) == []
    assert shape_differences({"a": {}}, {"a": {"b": 1}}) == ["$.a.b: missing"]
    assert shape_differences({"a": "1"}, {"a": 1}) == ["$.a: int expected, got str"]
    assert shape_differences({"a": [{"d": 1}]}, {"a": [{"d": "x"}]}) == ["$.a[0].d: str expected, got int"]


def test_the_shared_folder_is_beside_the_clone() -> None:
    assert (REPO_ROOT / "pyproject.toml").is_file()
    assert SHARED == REPO_ROOT.parent / "shared"
    assert SLACK_OPENAPI.is_file() and SLACK_MANIFEST_SCHEMA.is_file()


# --------------------------------------------------------------------------- request and answer shapes


def test_button_click_has_the_fields_slack_sends() -> None:
    ours = shapes.block_actions(user_id="U1")
    for name in ("block_actions_with_message.json", "block_actions_button.json"):
        assert shape_differences(ours, fixture(name)) == [], name


def test_modal_submission_has_the_fields_slack_sends() -> None:
    ours = shapes.view_submission(user_id="U1", values={"b": {"a": "typed"}})
    real = fixture("view_submission_private_metadata.json")
    assert shape_differences(ours, real) == []
    # views without inputs (a Home) have no close/submit; the rest of a view is the same
    assert shape_differences(shapes.view(view_type="home"), {k: v for k, v in real["view"].items() if k not in ("close", "submit")}) == []


def test_slash_command_has_the_fields_slack_sends() -> None:
    ours = dict(shapes.slash_command_fields(user_id="U1", text="list"))
    real = dict(parse_qsl(slack_fixture("slash_command.form").read_text(encoding="utf-8").strip()))
    # the published form comes from an Enterprise Grid workspace, which adds these two
    missing = set(real) - set(ours) - {"enterprise_id", "enterprise_name"}
    assert not missing


def test_event_callback_has_the_fields_slack_sends() -> None:
    ours = shapes.event_callback({"type": "app_mention", "user": "U1", "text": "hi", "ts": "1.2", "channel": "C1"})
    real = fixture("event_callback_app_mention.json")
    real.pop("enterprise_id")  # Enterprise Grid only
    real["event"] = {k: v for k, v in real["event"].items() if k in ours["event"]}
    assert shape_differences(ours, real) == []


def test_socket_mode_envelopes_have_the_keys_slack_sends() -> None:
    command = fixture("socket_mode_envelope_slash_command.json")
    assert set(command) == shapes.SOCKET_ENVELOPE_KEYS
    retry = fixture("socket_mode_envelope_event_retry.json")
    assert set(retry) == shapes.SOCKET_ENVELOPE_KEYS | shapes.SOCKET_RETRY_KEYS


def test_auth_test_and_refusal_answers_are_slacks() -> None:
    assert shape_differences(shapes.auth_test_answer(), fixture("web_api_bot_auth_test_response.json")) == []
    assert set(shapes.auth_test_answer()) == set(fixture("web_api_bot_auth_test_response.json"))
    assert shapes.error_answer("invalid_auth") == fixture("web_api_invalid_auth.json")


# --------------------------------------------------------------------------- the Web API method table


@lru_cache(maxsize=1)
def _openapi_paths() -> dict[str, Any]:
    with SLACK_OPENAPI.open(encoding="utf-8") as f:
        return json.load(f)["paths"]


def openapi_required_params(method: str) -> tuple[str, ...] | None:
    """The parameters the spec marks required for ``method`` (without ``token``),
    or None when the spec has no such method."""
    operations = _openapi_paths().get(f"/{method}")
    if operations is None:
        return None
    required: list[str] = []
    for operation in operations.values():
        for param in operation.get("parameters", []):
            name = param.get("name")
            if param.get("required") and name != "token" and name not in required:
                required.append(name)
    return tuple(required)


def test_openapi_required_params_come_from_the_spec() -> None:
    assert openapi_required_params("chat.update") == ("channel", "ts")
    assert openapi_required_params("auth.test") == ()
    assert openapi_required_params("chat.doesNotExist") is None


@pytest.mark.parametrize("method", sorted(SPEC_METHODS))
def test_method_table_agrees_with_slacks_spec(method: str) -> None:
    assert openapi_required_params(method) == SPEC_METHODS[method]
    for name in EXTRA_REQUIRED.get(method, ()):
        spec_params = {p.get("name") for op in _openapi_paths()[f"/{method}"].values() for p in op.get("parameters", [])}
        assert name in spec_params, f"{method}: {name} is not even an optional argument in the spec"


def test_methods_newer_than_the_spec_are_not_in_it() -> None:
    for method in NEWER_THAN_SPEC:
        assert openapi_required_params(method) is None, f"{method} is in the spec: move it to SPEC_METHODS"


# --------------------------------------------------------------------------- the manifest


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(json.loads(SLACK_MANIFEST_SCHEMA.read_text()))


def test_manifest_matches_slacks_schema(validator: jsonschema.Draft7Validator) -> None:
    manifest = yaml.safe_load((REPO_ROOT / "manifest.yml").read_text())
    errors = sorted(validator.iter_errors(manifest), key=str)
    assert not errors, [e.message for e in errors]


def test_schema_catches_what_it_should(validator: jsonschema.Draft7Validator) -> None:
    manifest = yaml.safe_load((REPO_ROOT / "manifest.yml").read_text())
    broken = dict(manifest)
    broken.pop("display_information")
    assert not validator.is_valid(broken)
    misspelt = {**manifest, "setings": manifest["settings"]}
    assert not validator.is_valid(misspelt)
