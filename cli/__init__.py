"""The `detrtool` command line (click)."""
