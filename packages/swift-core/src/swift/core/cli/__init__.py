"""The `swift` command-line dispatcher."""
