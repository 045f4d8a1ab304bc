"""sqlbastion.observability."""
