"""Who is calling: agent and personal API keys, approver passwords and browser sessions."""
