"""Built-in mapping rules (TOML files beside this one)."""
