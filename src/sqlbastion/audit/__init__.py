"""sqlbastion.audit."""
