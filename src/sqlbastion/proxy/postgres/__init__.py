"""sqlbastion.proxy.postgres."""
