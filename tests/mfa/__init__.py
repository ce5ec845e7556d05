"""Step-up second factors for approvers (TOTP, WebAuthn) and location requirements."""
