"""Clearance: an approval gateway for AI agents."""
