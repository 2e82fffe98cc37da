"""The stack's constructs, one per concern; `infra.stack` composes them."""
