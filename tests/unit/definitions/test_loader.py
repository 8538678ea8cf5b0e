"""A flow using every field kind loads into the models with the values the author meant."""

from __future__ import annotations

from datetime import timedelta
from hashlib import sha256

from bot.definitions.loader import load_flow_text
from bot.definitions.models import (
    ApprovalStep,
    HttpStep,
    InputType,
    NotifyStep,
    ParallelStep,
    SubFlowStep,
    WaitStep,
)

EVERYTHING = """\
version: 1
name: everything
title: Every field
description: Uses each kind of field once.
inputs:
  count: {type: integer, min: 1, max: 10, default: 2, label: Count}
  ratio: {type: number, min: 0, max: 1, required: false}
  flag: {type: boolean, default: true}
  env: {type: choice, choices: [staging, production], default: staging}
  regions: {type: list, default: [eu, us], min_length: 1}
  token: {type: string, secret: true, pattern: "[a-z]+", min_length: 3, max_length: 40}
permissions:
  run: {users: [U0AAA], groups: [S0OPS], channels: [C0OPS]}
  operate: {users: [U0BBB]}
alerts: {channel: C0ALERTS, mention: {groups: [S0OPS]}}
defaults:
  timeout: 45s
  retry:
    {attempts: 4, backoff: 250ms, multiplier: 1.5, max_backoff: 1m, jitter: false, on: [5xx, 409]}
secrets: [API_TOKEN]
services:
  api: {env: API_URL}
  docs: {url: "https://docs.example.com"}
triggers:
  - {schedule: "30 6 * * 1-5", timezone: Europe/Paris, inputs: {token: abc}}
steps:
  - id: fetch
    title: Fetch
    kind: http
    method: POST
    service: api
    path: "/things/{{ inputs.count }}"
    headers: {Authorization: "Bearer {{ secrets.API_TOKEN }}"}
    query: {env: "{{ inputs.env }}"}
    json: {count: "{{ inputs.count }}", nested: ["{{ run.id }}"]}
    expect: [2xx, 409]
    follow_redirects: true
    max_response_bytes: 2048
    timeout: 1h30m
    retry: {attempts: 2}
    continue_on_error: true
  - id: fan_out
    kind: parallel
    branches:
      one:
        - {id: wait_a, kind: wait, duration: 90}
      two:
        - {id: wait_b, kind: wait, until: "{{ run.started_at }}"}
  - id: ask
    kind: approval
    question: "Go on with {{ steps.fetch.output.status }}?"
    details: Details here.
    quorum:
      - {group: S0LEGAL, required: 1, label: Legal}
      - {users: [U0AAA, U0BBB], required: 1}
    timeout: 2d
    on_timeout: escalate
    remind_every: 12h
    escalate:
      approvers: {groups: [S0OPS]}
      required: 2
      timeout: 1w
      on_timeout: approve
    allow_requester: true
    require_reason: always
    fields: [{id: ticket, label: Ticket, type: text, required: false, description: Why}]
    dm: true
    show_inputs: [count, env]
  - id: per_region
    kind: notify
    user: "{{ run.started_by }}"
    text: "{{ region }} of {{ inputs.regions | join(',') }}"
    for_each: {items: "{{ inputs.regions }}", as: region, concurrency: 2}
  - id: child
    kind: flow
    flow: other-flow
    inputs: {order_id: "{{ inputs.count }}"}
    when: "inputs.flag"
on_failure:
  - {id: alert, kind: notify, channel: C0ALERTS, text: "failed: {{ steps.fetch.state }}"}
outputs:
  status: "{{ steps.fetch.output.status }}"
"""


def test_every_field_kind_loads() -> None:
    result = load_flow_text(EVERYTHING, file="everything.yaml")
    assert result.problems == []
    flow = result.flow
    assert flow is not None
    assert result.source_hash == sha256(EVERYTHING.encode()).hexdigest()
    assert flow.inputs["regions"].type is InputType.LIST
    assert flow.inputs["ratio"].is_required is False
    assert flow.defaults.timeout == timedelta(seconds=45)
    assert flow.defaults.retry.backoff == timedelta(milliseconds=250)
    assert flow.defaults.retry.on == ["5xx", 409]
    fetch, fan_out, ask, per_region, child = flow.steps
    assert isinstance(fetch, HttpStep)
    assert fetch.body_json == {"count": "{{ inputs.count }}", "nested": ["{{ run.id }}"]}
    assert fetch.timeout == timedelta(hours=1, minutes=30)
    assert isinstance(fan_out, ParallelStep)
    wait_a = fan_out.branches["one"][0]
    assert isinstance(wait_a, WaitStep)
    assert wait_a.duration == timedelta(seconds=90)
    assert isinstance(ask, ApprovalStep)
    assert [level.timeout for level in ask.levels()] == [timedelta(days=2), timedelta(weeks=1)]
    assert isinstance(per_region, NotifyStep)
    assert per_region.for_each is not None
    assert per_region.for_each.as_ == "region"
    assert isinstance(child, SubFlowStep)
    assert flow.triggers[0].timezone == "Europe/Paris"


def test_catalog_level_problems_are_not_raised_for_a_single_text() -> None:
    # `other-flow` is unknown, but that is judged only when a whole directory loads.
    assert load_flow_text(EVERYTHING).flow is not None
