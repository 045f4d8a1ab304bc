"""sqlbastion.audit.sinks."""
