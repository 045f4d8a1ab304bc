"""sqlbastion.masking."""
