"""The admin CLI, `python -m functions.admin`: doctor, explain, directory tools, test calls,
relay states. See docs/admin.md."""
