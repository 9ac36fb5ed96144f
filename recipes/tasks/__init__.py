"""The recipes' tasks: one module and one TOML file each; what two tasks share lives in `transforms`."""
