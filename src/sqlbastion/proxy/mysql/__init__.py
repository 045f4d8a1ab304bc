"""sqlbastion.proxy.mysql."""
