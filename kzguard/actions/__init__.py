"""The only code that changes a host: each action is logged, recorded and honours --dry-run."""
