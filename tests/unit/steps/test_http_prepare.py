"""``prepare`` is pure: each case renders a step and inspects the request it would send."""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

import httpx
import pytest

from bot import __version__
from bot.definitions.templating import Scope
from bot.errors import ConfigError, TemplateError
from bot.redact import Redactor
from bot.steps.http import PreparedRequest, host_allowed, prepare
from tests.unit.steps.support import http_step

INVENTORY = {"inventory": "https://inventory.example/api/v1"}


def build(scope: Scope | None = None, services: dict[str, str] | None = None, **fields: object):
    return prepare(
        http_step(**fields),
        scope=scope or Scope(),
        services=INVENTORY if services is None else services,
        idempotency_key="run-7:call",
    )


def with_inputs(**inputs: object) -> Scope:
    return Scope(inputs=inputs)


# ---------------------------------------------------------------- URL encoding


@pytest.mark.parametrize(
    ("value", "raw_path"),
    [
        ("a/b", "/api/v1/items/a%2Fb"),
        ("two words", "/api/v1/items/two%20words"),
        ("what?", "/api/v1/items/what%3F"),
        ("x#frag", "/api/v1/items/x%23frag"),
        ("..", "/api/v1/items/%2E%2E"),
        (".", "/api/v1/items/%2E"),
        ("../../admin", "/api/v1/items/..%2F..%2Fadmin"),
        ("100%", "/api/v1/items/100%25"),
        ("snö", "/api/v1/items/sn%C3%B6"),
    ],
)
def test_path_values_are_percent_encoded(value: str, raw_path: str) -> None:
    request = build(with_inputs(sku=value), service="inventory", path="/items/{{ inputs.sku }}")
    url = httpx.URL(request.url)
    assert url.host == "inventory.example"
    assert url.raw_path.decode() == raw_path


def test_dot_values_in_a_literal_url_stay_names() -> None:
    request = build(with_inputs(sku=".."), url="https://api.example/items/{{ inputs.sku }}/stock")
    assert httpx.URL(request.url).raw_path == b"/items/%2E%2E/stock"


def test_dots_inside_a_longer_value_are_left_alone() -> None:
    request = build(with_inputs(v="1.2.3"), url="https://api.example/releases/{{ inputs.v }}")
    assert request.url == "https://api.example/releases/1.2.3"


def test_every_value_gets_its_own_url_however_often_a_step_is_prepared() -> None:
    """Parsed URLs are remembered by their text, so a new value is never sent an old URL."""
    urls = [
        build(with_inputs(sku=sku), service="inventory", path="/items/{{ inputs.sku }}").url
        for sku in ["a", "b", "a", "..", "b"]
    ]
    base = "https://inventory.example/api/v1/items/"
    assert urls == [base + "a", base + "b", base + "a", base + "%2E%2E", base + "b"]


# ---------------------------------------------------------------- origin pinning


@pytest.mark.parametrize(
    "value", ["evil.com@", "@evil.com", "//evil.com", "evil.com:443/x", "\\\\evil.com", ":8080"]
)
def test_values_cannot_change_the_host_of_a_literal_url(value: str) -> None:
    request = build(with_inputs(v=value), url="https://api.example/{{ inputs.v }}/x")
    url = httpx.URL(request.url)
    assert (url.scheme, url.host, url.port, url.userinfo) == ("https", "api.example", None, b"")


@pytest.mark.parametrize("value", ["evil.com@", "//evil.com", "@evil.com/"])
def test_values_cannot_change_the_host_of_a_service(value: str) -> None:
    request = build(with_inputs(v=value), service="inventory", path="{{ inputs.v }}")
    assert httpx.URL(request.url).host == "inventory.example"


@pytest.mark.parametrize(
    "url",
    [
        "{{ inputs.url }}",
        "https://{{ inputs.host }}/x",
        "https://api.example{{ inputs.suffix }}/x",
        "https://api.example:{{ inputs.port }}/x",
        "ftp://files.example/{{ inputs.name }}",
    ],
)
def test_templated_or_odd_origins_are_refused(url: str) -> None:
    scope = with_inputs(url="https://x.example", host="x", suffix=".evil", port=1, name="n")
    with pytest.raises(TemplateError):
        build(scope, url=url)


def test_a_literal_url_without_templates_is_sent_as_is() -> None:
    assert build(url="https://api.example").url == "https://api.example"


# ---------------------------------------------------------------- services


@pytest.mark.parametrize(
    ("base", "path", "expected"),
    [
        (
            "https://inventory.example/api/v1",
            "/items/1",
            "https://inventory.example/api/v1/items/1",
        ),
        (
            "https://inventory.example/api/v1/",
            "/items/1",
            "https://inventory.example/api/v1/items/1",
        ),
        ("https://inventory.example/api/v1", "items/1", "https://inventory.example/api/v1/items/1"),
        ("https://inventory.example", "", "https://inventory.example"),
        ("http://127.0.0.1:8081/inv", "/items", "http://127.0.0.1:8081/inv/items"),
    ],
)
def test_service_base_url_and_path_are_joined(base: str, path: str, expected: str) -> None:
    request = build(services={"inventory": base}, service="inventory", path=path)
    assert request.url == expected


def test_a_missing_service_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="inventory"):
        build(services={}, service="inventory", path="/x")


@pytest.mark.parametrize(
    "base", ["inventory.example", "ftp://inventory.example", "https://inv.example/?v=1"]
)
def test_a_malformed_service_url_is_refused(base: str) -> None:
    with pytest.raises(ConfigError):
        build(services={"inventory": base}, service="inventory", path="/x")


# ---------------------------------------------------------------- query


def test_query_values_are_rendered_plain_and_encoded_once() -> None:
    request = build(
        with_inputs(q="a b&c=d", n=3),
        url="https://api.example/search?fixed=1",
        query={"q": "{{ inputs.q }}", "n": "{{ inputs.n }}"},
    )
    url = httpx.URL(request.url)
    assert url.host == "api.example"
    assert parse_qsl(url.query.decode()) == [("fixed", "1"), ("q", "a b&c=d"), ("n", "3")]


# ---------------------------------------------------------------- headers


@pytest.mark.parametrize("value", ["x\r\nX-Injected: 1", "x\nSet-Cookie: a=b", "x\rfoo", "a\x00b"])
def test_headers_with_line_breaks_are_refused_by_name(value: str) -> None:
    with pytest.raises(TemplateError, match="X-Customer"):
        build(
            with_inputs(c=value),
            url="https://api.example/x",
            headers={"X-Customer": "{{ inputs.c }}"},
        )


def test_non_ascii_header_values_are_refused() -> None:
    with pytest.raises(TemplateError, match="X-Name"):
        build(
            with_inputs(n="Zoë"), url="https://api.example/", headers={"X-Name": "{{ inputs.n }}"}
        )


def test_header_values_are_rendered_plain() -> None:
    request = build(
        with_inputs(team="a b/c"),
        url="https://api.example/",
        headers={"X-Team": "{{ inputs.team }}"},
    )
    assert request.header("x-team") == "a b/c"


def test_idempotency_key_and_user_agent_are_always_sent() -> None:
    request = build(url="https://api.example/", headers={"Idempotency-Key": "mine"})
    assert request.header("Idempotency-Key") == "run-7:call"
    assert request.header("User-Agent") == f"relay/{__version__}"
    assert [name.lower() for name, _ in request.headers].count("idempotency-key") == 1


# ---------------------------------------------------------------- bodies


def test_json_body_keeps_native_types() -> None:
    scope = with_inputs(qty=3, price=9.5, rush=True, tags=["a", "b"], note=None, sku="SKU-1")
    request = build(
        scope,
        method="POST",
        url="https://api.example/orders",
        json={
            "qty": "{{ inputs.qty }}",
            "price": "{{ inputs.price }}",
            "rush": "{{ inputs.rush }}",
            "tags": "{{ inputs.tags }}",
            "note": "{{ inputs.note }}",
            "label": "order {{ inputs.sku }}",
            "fixed": 7,
        },
    )
    assert request.content is not None
    assert json.loads(request.content) == {
        "qty": 3,
        "price": 9.5,
        "rush": True,
        "tags": ["a", "b"],
        "note": None,
        "label": "order SKU-1",
        "fixed": 7,
    }
    assert request.header("content-type") == "application/json"


def test_a_json_body_that_is_not_json_is_refused() -> None:
    scope = Scope(inputs={"n": float("nan")})
    with pytest.raises(TemplateError, match="json"):
        build(scope, method="POST", url="https://api.example/", json={"n": "{{ inputs.n }}"})


def test_form_body_is_url_encoded() -> None:
    request = build(
        with_inputs(text="a&b=c d"),
        method="POST",
        url="https://api.example/form",
        form={"text": "{{ inputs.text }}", "n": "1"},
    )
    assert request.content == b"text=a%26b%3Dc+d&n=1"
    assert request.header("content-type") == "application/x-www-form-urlencoded"


def test_an_explicit_content_type_wins() -> None:
    request = build(
        method="PATCH",
        url="https://api.example/",
        headers={"Content-Type": "application/merge-patch+json"},
        json={"a": 1},
    )
    assert request.header("content-type") == "application/merge-patch+json"


# ---------------------------------------------------------------- display and masking


def test_display_masks_secrets_everywhere() -> None:
    token = "s3cr3t/t0ken+x"
    scope = Scope(secrets={"TOKEN": token})
    request = build(
        scope,
        method="POST",
        url="https://api.example/hooks/{{ secrets.TOKEN }}",
        headers={"Authorization": "Bearer {{ secrets.TOKEN }}", "X-Echo": "{{ secrets.TOKEN }}"},
        json={"token_copy": "{{ secrets.TOKEN }}"},
    )
    shown = request.display(Redactor([token]))
    assert token not in shown
    assert "s3cr3t%2Ft0ken%2Bx" not in shown  # the form it takes in the URL
    assert shown.splitlines()[0] == "POST https://api.example/hooks/***"
    assert "Authorization: ***" in shown
    assert "X-Echo: ***" in shown
    assert '{"token_copy":"***"}' in shown


def test_display_masks_credential_headers_even_without_declared_secrets() -> None:
    request = PreparedRequest(
        method="GET", url="https://a.example/", headers=(("X-Api-Key", "k"), ("Accept", "*/*"))
    )
    assert request.display(Redactor()).splitlines() == [
        "GET https://a.example/",
        "X-Api-Key: ***",
        "Accept: */*",
    ]


# ---------------------------------------------------------------- the redactor


def test_redactor_masks_longest_secret_first() -> None:
    redactor = Redactor(["abcd", "abcdefgh"])
    assert redactor.mask("x abcdefgh y abcd") == "x *** y ***"


def test_redactor_ignores_short_and_empty_secrets() -> None:
    assert Redactor(["", "abc"]).mask("abc") == "abc"


def test_redactor_masks_encoded_forms() -> None:
    secret = 'p@ss w/"rd"'
    redactor = Redactor([secret])
    text = f'raw {secret} url p%40ss%20w%2F%22rd%22 form p%40ss+w%2F%22rd%22 json "p@ss w/\\"rd\\""'
    assert redactor.mask(text) == 'raw *** url *** form *** json "***"'


def test_redactor_masks_nested_data_and_sensitive_keys() -> None:
    redactor = Redactor(["hunter22"])
    data = {
        "headers": {"Authorization": "Basic xyz", "Cookie": "a=b", "X-Api-Key": "k", "Accept": "*"},
        "items": [{"note": "pw hunter22"}, ("hunter22", 3)],
        "session_token": "abc",
        "client_secret": "def",
        "count": 2,
    }
    assert redactor.mask_data(data) == {
        "headers": {"Authorization": "***", "Cookie": "***", "X-Api-Key": "***", "Accept": "*"},
        "items": [{"note": "pw ***"}, ("***", 3)],
        "session_token": "***",
        "client_secret": "***",
        "count": 2,
    }


def test_redactor_by_value_only_keeps_sensitive_keys() -> None:
    redactor = Redactor(["hunter22"])
    data = {"access_token": "minted", "echo": "hunter22"}
    assert redactor.mask_data(data, by_name=False) == {"access_token": "minted", "echo": "***"}


def test_redactor_without_secrets_changes_nothing() -> None:
    assert Redactor().mask("anything at all") == "anything at all"


def test_redactors_mask_their_own_secrets_whatever_was_built_before() -> None:
    text = "abcd efgh"
    assert Redactor(["abcd"]).mask(text) == "*** efgh"
    assert Redactor(["efgh"]).mask(text) == "abcd ***"
    assert Redactor(["efgh", "abcd"]).mask(text) == Redactor(["abcd", "efgh"]).mask(text)
    assert Redactor(iter(["abcd"])).mask(text) == "*** efgh"


# ---------------------------------------------------------------- the host allowlist


@pytest.mark.parametrize(
    ("host", "allow", "ok"),
    [
        ("anything.example", (), True),
        ("inventory.example", ("inventory.example",), True),
        ("Inventory.Example", ("inventory.example",), True),
        ("inventory.example.", ("INVENTORY.example",), True),
        ("billing.example", ("inventory.example",), False),
        ("a.corp.example", ("*.corp.example",), True),
        ("a.b.corp.example", ("*.corp.example",), True),
        ("corp.example", ("*.corp.example",), False),
        ("evilcorp.example", ("*.corp.example",), False),
        ("corp.example.evil.com", ("*.corp.example",), False),
        ("127.0.0.1", ("localhost",), False),
    ],
)
def test_host_allowlist(host: str, allow: tuple[str, ...], ok: bool) -> None:
    assert host_allowed(host, allow) is ok
