"""sqlbastion.policies."""
