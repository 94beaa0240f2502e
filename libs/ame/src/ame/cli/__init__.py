"""The `ame` command line."""
