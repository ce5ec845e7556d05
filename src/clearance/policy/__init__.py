"""The policy engine: load YAML policies, evaluate requests, test policies."""

from .engine import Engine
from .load import Policy, PolicyError, Problem, load_policy, load_policy_text
from .model import Decision, Effect, Request, ResolvedPlan, Rule

__all__ = [
    "Decision",
    "Effect",
    "Engine",
    "Policy",
    "PolicyError",
    "Problem",
    "Request",
    "ResolvedPlan",
    "Rule",
    "load_policy",
    "load_policy_text",
]
