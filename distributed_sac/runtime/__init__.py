"""What every process of the system runs on (docs/architecture.md maps the modules)."""
