"""Small builders for policy tests."""

from __future__ import annotations

import textwrap

from clearance.policy import Engine, Policy, load_policy_text

PEOPLE = """
directory:
  people:
    - {id: alice, name: Alice Ng, groups: [managers]}
    - {id: bob, name: Bob Ortiz, groups: [managers]}
    - {id: carol, groups: [staff]}
    - {id: dana, groups: [finance-directors]}
    - {id: erin, groups: [finance-directors, managers]}
    - {id: frank, groups: [security]}
"""


def policy(rules: str, *, default: str = "deny", people: str = PEOPLE) -> Policy:
    text = (
        textwrap.dedent(people)
        + textwrap.dedent(
            f"""
        policies:
          default: {default}
          rules:
        """
        )
        + textwrap.indent(textwrap.dedent(rules), "    ")
    )
    return load_policy_text(text, "test.yaml")


def engine(rules: str, **kw: str) -> Engine:
    return Engine(policy(rules, **kw))
