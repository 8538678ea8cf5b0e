"""Flow texts shared by the behaviour tests of the machine."""

from __future__ import annotations

from tests.unit.engine.harness import World

SEQ = """
name: seq
steps:
  - {id: a, kind: http, url: "http://x/a"}
  - {id: b, kind: http, url: "http://x/b"}
  - {id: c, kind: notify, text: done}
"""


FE = """
name: fe
steps:
  - id: fe
    kind: http
    url: "http://x/{{ item }}"
    for_each: {items: [a, b, c, d, e], concurrency: 2}
  - {id: after, kind: notify, text: "{{ steps.fe.output }}"}
"""


RETRYING = """
name: rt
steps:
  - id: a
    kind: http
    url: "http://x/a"
    retry: {attempts: 4, backoff: 10s, multiplier: 2}
"""


def approval(extra: str = "", *, approvers: str = "{users: [U0A, U0B, U0C]}") -> str:
    return f"""
name: ap
steps:
  - id: ok
    kind: approval
    question: "go?"
    approvers: {approvers}
{extra}
  - {{id: after, kind: http, url: "http://x/after"}}
"""


PARENT = """
name: parent
steps:
  - {id: sub, kind: flow, flow: child, inputs: {n: 2}}
  - {id: after, kind: notify, text: "{{ steps.sub.output.total }}"}
"""


CHILD = """
name: child
inputs: {n: {type: integer}}
steps:
  - {id: work, kind: http, url: "http://x/{{ inputs.n }}"}
outputs: {total: "{{ steps.work.output.total }}"}
"""


UNDO = """
name: undo
steps:
  - {id: a, kind: http, url: "http://x/a", compensate: [{id: undo_a, kind: http, url: "http://x/ua"}]}
  - {id: b, kind: http, url: "http://x/b"}
  - id: c
    kind: http
    url: "http://x/c"
    compensate:
      - {id: undo_c1, kind: http, url: "http://x/uc1"}
      - {id: undo_c2, kind: http, url: "http://x/uc2"}
  - {id: d, kind: http, url: "http://x/d"}
on_failure:
  - {id: page, kind: notify, text: "{{ run.id }} failed"}
"""


def fail_at_d(w: World) -> str:
    """Start ``undo`` and fail it at step d, after a, b and c succeeded."""
    r = w.start("undo")
    for key in ("a", "b", "c"):
        w.succeed(r, key)
    w.fail(r, "d", "409 conflict", status=409)
    return r
