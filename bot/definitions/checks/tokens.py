"""Find credentials pasted into a flow file, comments included.

Flow files live in git, where a pasted token is leaked for good. The scan runs
on the raw text, so it also catches tokens in comments and in files that are
otherwise broken.
"""

from __future__ import annotations

import re

from bot.definitions.problems import Problem

_TOKENS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("a Slack token", re.compile(r"\bxox[abposr]-[0-9A-Za-z-]{10,}")),
    ("a Slack app token", re.compile(r"\bxapp-[0-9A-Za-z-]{10,}")),
    ("a GitHub token", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}")),
    ("a GitHub token", re.compile(r"\bgithub_pat_[A-Za-z0-9_]{22,}")),
    ("an AWS access key", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("a Stripe secret key", re.compile(r"\b[sr]k_live_[0-9A-Za-z]{10,}")),
    ("a private key", re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----")),
    ("a bearer token", re.compile(r"\bBearer\s+[A-Za-z0-9\-._~+/]{20,}=*")),
)


def scan_tokens(text: str, *, file: str) -> list[Problem]:
    """One error per pasted credential, at its line and column."""
    problems: list[Problem] = []
    for number, line in enumerate(text.splitlines(), start=1):
        for what, pattern in _TOKENS:
            for match in pattern.finditer(line):
                problems.append(
                    Problem(
                        file=file,
                        line=number,
                        column=match.start() + 1,
                        severity="error",
                        code="pasted-token",
                        message=f"this looks like {what} pasted into the file",
                        fix="move it to an environment variable listed in `secrets:` "
                        "and write `{{ secrets.NAME }}`",
                    )
                )
    return problems
