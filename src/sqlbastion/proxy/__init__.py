"""sqlbastion.proxy."""
