"""sqlbastion.devtools."""
