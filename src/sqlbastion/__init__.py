"""sqlbastion: a database bastion for MySQL and PostgreSQL."""

__version__ = "0.1.0"
